"""Masks painted in a browser editor: a drawn RGBA layer to a clean label map, and back.

The demo's editor hands over what the visitor painted as an RGBA layer. Its brush edges are
anti-aliased (alpha between 0 and 255) and a large image may be drawn at a display scale, so
neither the alpha ramp nor the scale may leak into the mask: the layer is thresholded first,
then each painted pixel takes the class of the nearest brush colour, then the label map is
brought to the image's size by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from trainers.data.readers import DataError

__all__ = ["labels_to_layer", "layer_to_labels"]

RGB = tuple[int, int, int]
PAINTED_ALPHA = 128  # alpha at or above this is paint; below, an anti-aliased edge's fringe


def layer_to_labels(
    layer: np.ndarray, size: tuple[int, int], colours: Sequence[RGB], *, source: str = "drawing"
) -> np.ndarray:
    """An H x W int64 label map from an RGBA layer: 0 where nothing is painted, c where the
    paint is nearest to `colours[c - 1]`.

    `size` is the image's (height, width). A layer of another size with the image's aspect
    ratio (a display scale, within a pixel of rounding) is scaled to it; any other size is a
    `DataError` naming both sizes and `source`.
    """
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise DataError(f"{source}: expected an RGBA layer, got an array of shape {layer.shape}")
    height, width = size
    painted = layer[..., 3] >= PAINTED_ALPHA
    paint = layer[painted][:, :3].astype(np.int32)  # N x 3, painted pixels only
    palette = np.asarray(colours, dtype=np.int32)  # K x 3
    labels = np.zeros(painted.shape, dtype=np.uint8)
    labels[painted] = ((paint[:, None] - palette) ** 2).sum(axis=-1).argmin(axis=-1) + 1
    if labels.shape == (height, width):
        return labels.astype(np.int64)
    h, w = labels.shape
    if abs(w * height / h - width) > 1 or abs(h * width / w - height) > 1:
        raise DataError(
            f"{source}: the drawing is {w} x {h} pixels but the image is {width} x {height}; "
            "draw on the image as loaded, or load it into the editor again"
        )
    scaled = Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(scaled).astype(np.int64)


def labels_to_layer(labels: np.ndarray, colours: Sequence[RGB]) -> np.ndarray:
    """An H x W x 4 uint8 RGBA layer painting class c > 0 in `colours[c - 1]`, opaque."""
    layer = np.zeros((*labels.shape, 4), dtype=np.uint8)
    for c in range(1, int(labels.max(initial=0)) + 1):
        layer[labels == c] = (*colours[(c - 1) % len(colours)], 255)
    return layer
