"""Painted layers to masks: thresholded edges, display scale, class colours, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from demo.annotation import labels_to_layer, layer_to_labels
from trainers.data.readers import DataError, read_mask

YELLOW, BLUE = (255, 200, 0), (0, 200, 255)


def test_a_stroke_drawn_at_half_scale_maps_to_full_resolution_pixels() -> None:
    # A 4 x 6 display of an 8 x 12 image: one opaque yellow pixel, one anti-aliased fringe
    # pixel (alpha 100: not paint) and one half-covered pixel (alpha 200: paint).
    layer = np.zeros((4, 6, 4), dtype=np.uint8)
    layer[1, 2] = (*YELLOW, 255)
    layer[1, 3] = (*YELLOW, 100)
    layer[2, 2] = (250, 190, 10, 200)  # blended towards the background: still nearest yellow
    labels = layer_to_labels(layer, (8, 12), [YELLOW])
    expected = np.zeros((8, 12), dtype=np.int64)
    expected[2:4, 4:6] = 1  # display pixel (1, 2) covers rows 2-3, columns 4-5
    expected[4:6, 4:6] = 1  # display pixel (2, 2)
    np.testing.assert_array_equal(labels, expected)


def test_each_painted_pixel_takes_the_class_of_the_nearest_brush_colour() -> None:
    layer = np.zeros((2, 3, 4), dtype=np.uint8)
    layer[0, 0] = (*YELLOW, 255)
    layer[0, 1] = (*BLUE, 255)
    layer[1, 2] = (10, 190, 240, 255)  # a blue stroke blended at its edge
    labels = layer_to_labels(layer, (2, 3), [YELLOW, BLUE])
    np.testing.assert_array_equal(labels, [[1, 2, 0], [0, 0, 2]])
    layer = labels_to_layer(labels, [YELLOW, BLUE])  # a prediction loaded for correction
    np.testing.assert_array_equal(layer_to_labels(layer, (2, 3), [YELLOW, BLUE]), labels)


def test_an_empty_drawing_is_an_empty_target_not_an_error() -> None:
    assert not layer_to_labels(np.zeros((5, 7, 4), np.uint8), (5, 7), [YELLOW]).any()


@pytest.mark.parametrize("shape", [(5, 9, 4), (10, 7, 4)])
def test_a_drawing_of_another_size_is_refused_naming_both_sizes(shape) -> None:
    with pytest.raises(DataError, match=rf"{shape[1]} x {shape[0]} pixels but the image is 7 x 5"):
        layer_to_labels(np.zeros(shape, np.uint8), (5, 7), [YELLOW], source="drawing")


def test_a_layer_that_is_not_rgba_is_refused() -> None:
    with pytest.raises(DataError, match="expected an RGBA layer"):
        layer_to_labels(np.zeros((5, 7, 3), np.uint8), (5, 7), [YELLOW])


def test_a_corrected_mask_saved_as_0_255_png_reads_back_the_same(tmp_path) -> None:
    labels = np.zeros((6, 9), dtype=np.int64)
    labels[1:4, 2:7] = 1
    path = tmp_path / "scan_corrected_mask.png"
    Image.fromarray((labels > 0).astype(np.uint8) * 255).save(path)
    np.testing.assert_array_equal(read_mask(path), labels > 0)
