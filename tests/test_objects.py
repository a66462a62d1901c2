"""Objects: the field's object scores against hand-computed cases and a reference implementation,
the object target and its watershed, object labels read from files, the table of objects."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.data import parse_spec
from trainers.data.readers import DataError, read_mask, read_objects
from trainers.data.targets import object_classes
from trainers.scores import objects


def three_and_three() -> tuple[np.ndarray, np.ndarray]:
    """Target: A (2x2), B (3x3), C (2x2). Prediction: A exactly (IoU 1), 6 of B's 9 pixels
    (IoU 2/3), one pixel touching no true object (a false positive); C missed."""
    target = np.zeros((6, 8), int)
    target[0:2, 0:2], target[3:6, 3:6], target[0:2, 6:8] = 1, 2, 3
    pred = np.zeros((6, 8), int)
    pred[0:2, 0:2], pred[3:6, 3:5], pred[5, 7] = 5, 9, 4  # any ids, in any order
    return pred, target


def test_object_scores_of_a_hand_computed_case() -> None:
    scores = objects.object_scores(*three_and_three())
    # IoU 1 hits at every t; IoU 2/3 at t = 0.50..0.65 (four thresholds): TP 2 of 3 + 3 - 2
    # there, TP 1 of 3 + 3 - 1 at the six others.
    assert scores["dsb_score"] == pytest.approx((4 * 2 / 4 + 6 * 1 / 5) / 10)  # 0.32
    assert scores["ap50"] == pytest.approx(0.5)
    assert scores["f1_50"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["sq"] == pytest.approx((1 + 6 / 9) / 2)
    assert scores["rq"] == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert scores["pq"] == pytest.approx((1 + 6 / 9) / 2 * 2 / 3)
    # AJI: A with A (4 / 4), B with its part (6 / 9), C alone (0 / 4), the stray pixel (0 / 1).
    assert scores["aji"] == pytest.approx((4 + 6) / (4 + 9 + 4 + 1))
    assert (scores["objects"], scores["true_objects"], scores["count_error"]) == (3, 3, 0)


def test_an_iou_of_exactly_one_half_is_no_hit_as_kaggle_scored() -> None:
    target = np.zeros((4, 4), int)
    target[0:2, 0:2] = 1
    pred = np.zeros((4, 4), int)
    pred[0:2, 0] = 1  # 2 of 4 pixels: IoU 0.5, not above it
    scores = objects.object_scores(pred, target)
    assert scores["ap50"] == 0 and scores["dsb_score"] == 0 and scores["pq"] == 0


def test_the_empty_cases() -> None:
    empty = np.zeros((5, 5), int)
    both = objects.object_scores(empty, empty)
    assert math.isnan(both["dsb_score"]) and math.isnan(both["ap50"]) and math.isnan(both["aji"])
    assert both["count_error"] == 0 and both["objects"] == 0
    two = np.zeros((5, 5), int)
    two[0, 0], two[4, 4] = 1, 2
    missed = objects.object_scores(empty, two)
    assert missed["dsb_score"] == 0 and missed["aji"] == 0 and missed["count_error"] == -2


@pytest.mark.parametrize("side", ["prediction", "target"])
def test_every_ratio_is_0_when_exactly_one_side_is_empty(side: str) -> None:
    empty, two = np.zeros((5, 5), int), np.zeros((5, 5), int)
    two[0, 0], two[4, 4] = 1, 2
    pred, target = (empty, two) if side == "prediction" else (two, empty)
    scores = objects.object_scores(pred, target)
    ratios = ("dsb_score", "ap50", "f1_50", "precision50", "recall50", "pq", "sq", "rq", "aji")
    assert {name: scores[name] for name in ratios} == dict.fromkeys(ratios, 0.0)


def test_object_means_leave_out_images_with_no_object_on_either_side_and_count_them() -> None:
    """Three images: the hand-computed case (precision 2/3, recall 2/3), one where nothing is
    predicted (precision and recall 0) and one with no object on either side (undefined: left
    out of the means and counted as excluded, as the pixel metrics count theirs)."""
    from trainers.evaluate import summarize_objects

    empty, two = np.zeros((5, 5), int), np.zeros((5, 5), int)
    two[0, 0], two[4, 4] = 1, 2
    rows = [
        {"id": "hand", **objects.object_scores(*three_and_three())},
        {"id": "missed", **objects.object_scores(empty, two)},
        {"id": "nothing", **objects.object_scores(empty, empty)},
    ]
    summary = summarize_objects(rows)
    assert summary["precision50"] == pytest.approx(
        {"mean": 1 / 3, "std": 1 / 3, "n": 2, "excluded": 1}
    )
    assert summary["ap50"] == pytest.approx({"mean": 0.25, "std": 0.25, "n": 2, "excluded": 1})
    assert summary["count_error"] == pytest.approx(
        {"mean": -2 / 3, "std": math.sqrt(8 / 9), "n": 3, "excluded": 0}
    )
    assert summary["objects_total"] == 3 and summary["true_objects_total"] == 5
    assert summary["median_relative_count_error"] == pytest.approx(0.5)  # of 0 and 1


def test_one_foreground_for_object_models_background_below_one_half() -> None:
    probabilities = np.array(
        [[0.4, 0.5, 0.9, 0.2], [0.3, 0.25, 0.05, 0.1], [0.3, 0.25, 0.05, 0.7], [0, 0, 0, 0]],
        np.float32,
    ).reshape(4, 1, 4)
    assert objects.foreground(probabilities).tolist() == [[True, False, False, True]]


def test_the_demo_s_mask_of_an_object_model_is_that_foreground() -> None:
    from demo.views import Prediction, render
    from trainers.data.medical import Decoded

    probabilities = np.zeros((4, 8, 8), np.float16)
    probabilities[0] = 1
    probabilities[:, 0, 0] = (0.4, 0.3, 0.3, 0.0)  # background the likeliest, yet below 1/2
    probabilities[:, 4, 4] = (0.1, 0.9, 0.0, 0.0)
    kept = Prediction(np.zeros((8, 8, 3), np.uint8), probabilities, None,
                      ["background", "nucleus", "nucleus boundary", "nucleus contact"], "scan",
                      Decoded(np.zeros((8, 8, 1), np.float32)), object_target=True)  # fmt: skip
    mask = np.asarray(Image.open(render(kept, 0.5)["mask"]))
    assert mask[0, 0] == 255 and mask[4, 4] == 255 and (mask > 0).sum() == 2


def test_one_label_writer_16_bit_png_while_ids_fit_else_32_bit_tiff(tmp_path: Path) -> None:
    import tifffile

    from demo.objects import Objects

    few = np.zeros((3, 4), np.int32)
    few[0, 0], few[2, 3] = 65_535, 7
    path = objects.write_labels(few, tmp_path / "few")
    assert path == tmp_path / "few_labels.png"
    saved = np.asarray(Image.open(path))
    assert saved.dtype == np.uint16 and saved.tolist() == few.tolist()
    many = few.copy()
    many[1, 1] = 65_536
    path = objects.write_labels(many, tmp_path / "many")
    assert path == tmp_path / "many_labels.tif" and not (tmp_path / "many_labels.png").exists()
    saved = tifffile.imread(path)
    assert saved.dtype == np.uint32 and saved.tolist() == many.tolist()
    files = Objects.of(many, np.zeros((3, 4))).write(tmp_path, "demo")  # the demo's, the same
    assert files[0] == str(tmp_path / "demo_labels.tif")
    assert tifffile.imread(files[0]).tolist() == many.tolist()


def test_labels_that_are_not_integer_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="prediction: label ids must be integers"):
        objects.object_scores(np.zeros((3, 3), np.float32), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="target: label ids must be 0"):
        objects.object_scores(np.zeros((3, 3), int), -np.ones((3, 3), int))


def test_average_precision_matches_cellpose_on_the_same_label_images() -> None:
    """Figures of cellpose 3.1.1.3's `metrics.average_precision` at IoU 0.5, 0.75 and 0.9 on
    these label images, run by hand (`benchmarks/cellpose_reference.py`; TP 7, 1, 0 of 10 true
    and 11 predicted objects). Cellpose counts a hit at IoU >= t, which on these images (no IoU
    exactly at a threshold) is Kaggle's IoU > t. (Cellpose's `aggregated_jaccard_index` divides
    the matched intersections by the union of all foreground, not Kumar's sum of unions, so the
    AJI is checked by hand above.)"""
    target, pred = reference_labels()
    found = objects.overlaps(pred, target)
    assert found.counts == (10, 11)
    assert objects.object_scores(pred, target)["ap50"] == pytest.approx(CELLPOSE_AP[0])
    hits = [int(found.hits(t).sum()) for t in (0.5, 0.75, 0.9)]
    ap = [tp / (10 + 11 - tp) for tp in hits]
    assert ap == pytest.approx(CELLPOSE_AP, abs=1e-6)


def reference_labels() -> tuple[np.ndarray, np.ndarray]:
    """Ten discs of known centres and radii as the target; the prediction moves each by a
    pixel or two, drops one, splits one and adds one."""
    rows, columns = np.indices((96, 96))
    target, pred = np.zeros((96, 96), np.int32), np.zeros((96, 96), np.int32)
    centres = [(12, 12, 7), (12, 40, 6), (14, 70, 9), (40, 14, 5), (42, 44, 8),
               (40, 78, 6), (70, 12, 8), (72, 42, 4), (70, 72, 10), (88, 88, 5)]  # fmt: skip
    for number, (r, c, radius) in enumerate(centres, start=1):
        target[(rows - r) ** 2 + (columns - c) ** 2 <= radius**2] = number
        if number == 3:
            continue  # missed
        shift = number % 3
        disc = (rows - r - shift) ** 2 + (columns - c + 1) ** 2 <= (radius - (number % 2)) ** 2
        pred[disc] = number
    pred[(pred == 9) & (columns > 72)] = 11  # split in two
    pred[(rows - 55) ** 2 + (columns - 30) ** 2 <= 9] = 12  # spurious
    return target, objects.sequential(pred)[0]  # ids 1..11: Cellpose counts max(id) objects


CELLPOSE_AP = [0.5, 0.05000000074505806, 0.0]  # float32 in Cellpose


def test_rand_and_info_of_a_hand_computed_merge() -> None:
    """True regions {1, 1, 2, 2}, predicted all one: p = (1/2, 1/2), s = (1), t = (1/2, 1/2)."""
    scores = objects.rand_and_info(np.array([[5, 5, 5, 5]]), np.array([[1, 1, 2, 2]]))
    assert scores["v_rand"] == pytest.approx(2 * 0.5 / (1 + 0.5))
    assert scores["rand_split"] == pytest.approx(1.0) and scores["rand_merge"] == 0.5
    assert scores["v_info"] == pytest.approx(0.0) and scores["info_merge"] == pytest.approx(0.0)
    perfect = objects.rand_and_info(np.array([[7, 7, 3, 3]]), np.array([[1, 1, 2, 2]]))
    assert perfect["v_rand"] == pytest.approx(1.0) and perfect["v_info"] == pytest.approx(1.0)


def test_v_rand_agrees_with_scikit_image_on_a_large_case() -> None:
    """scikit-image's adapted Rand error counts pixel pairs (n^2 - n); the challenge's formula
    counts probabilities (n^2): alike to 1e-4 on 256 x 256 pixels, target 0 left out by both."""
    from skimage.metrics import adapted_rand_error

    rng = np.random.default_rng(0)
    true = np.repeat(np.repeat(rng.integers(0, 12, (16, 16)), 16, 0), 16, 1)
    pred = np.where(rng.random(true.shape) < 0.1, rng.integers(0, 12, true.shape), true)
    error, _, _ = adapted_rand_error(true, pred)
    assert objects.rand_and_info(pred, true)["v_rand"] == pytest.approx(1 - error, abs=1e-4)


def test_the_object_target_parts_touching_objects_and_the_watershed_finds_them_again() -> None:
    labels = np.zeros((8, 12), int)
    labels[1:7, 1:6], labels[1:7, 6:11] = 1, 2  # two touching 6 x 5 objects
    classes = object_classes(labels)
    assert (classes[2:6, 2:5] == 1).all() and (classes[2:6, 7:10] == 1).all()
    assert (classes[1:7, 5:7] == 3).all()  # where they touch: each one's contact, two pixels
    assert (classes[1, 1:5] == 2).all() and (classes[1:7, 1] == 2).all()  # the rest of the rim
    assert (classes[1:7, 10] == 2).all() and (classes[6, 7:10] == 2).all()
    assert classes[0].sum() == 0 and (classes[labels == 0] == 0).all()
    probabilities = np.stack([classes == c for c in range(4)]).astype(np.float32)
    split = objects.split_objects(probabilities, min_area=10)  # each object 30 px
    assert objects.object_scores(split, labels)["ap50"] == 1.0
    earlier = np.stack([classes == 0, classes == 1, classes >= 2]).astype(np.float32)
    again = objects.split_objects(earlier, min_area=10)  # a model of the three-class target
    assert objects.object_scores(again, labels)["ap50"] == 1.0
    assert objects.split_objects(probabilities).max() == 0  # under MIN_AREA (40 px): fragments
    merged = objects.objects_of(1 - probabilities[:1], 0.5, object_target=False)
    assert merged.max() == 1  # the foreground alone: one blob


def test_the_table_of_objects() -> None:
    labels = np.zeros((4, 6), int)
    labels[0:2, 0:2], labels[3, 3:6] = 4, 9
    image = np.arange(24, dtype=float).reshape(4, 6)
    table = objects.object_table(labels, image, pixel_area=0.25)
    assert table["id"].tolist() == [4, 9] and table["area_px"].tolist() == [4, 3]
    assert table["area_physical"].tolist() == [1.0, 0.75]
    assert table["mean_intensity"].tolist() == pytest.approx([(0 + 1 + 6 + 7) / 4, 22.0])
    assert table["centroid_row"].tolist() == [0.5, 3.0]
    assert table["centroid_col"].tolist() == [0.5, 4.0]
    assert table["equivalent_diameter_px"][0] == pytest.approx(2 * math.sqrt(4 / math.pi))


def test_object_labels_read_from_one_file_per_object_and_from_a_label_image(
    tmp_path: Path,
) -> None:
    first, second = np.zeros((5, 6), np.uint8), np.zeros((5, 6), np.uint8)
    first[0:2, 0:2], second[3:5, 3:6] = 255, 255
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, mask in zip(paths, (first, second), strict=True):
        Image.fromarray(mask).save(path)
    labels = read_objects(paths)
    assert labels[0, 0] == 1 and labels[4, 5] == 2 and (labels > 0).sum() == 4 + 6
    label_image = np.zeros((5, 6), np.uint16)
    label_image[1, 1], label_image[3, 2:4] = 300, 7
    Image.fromarray(label_image).save(tmp_path / "labels.png")
    assert np.array_equal(read_objects([tmp_path / "labels.png"]), label_image)
    # Read as a binary mask, a label image is its objects' union.
    assert np.array_equal(read_mask(tmp_path / "labels.png"), label_image > 0)


def test_label_images_of_float_or_colour_values_are_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    Image.fromarray(np.full((4, 4), 1.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float\.tif: 32-bit float images are not supported"):
        read_objects([tmp_path / "float.tif"])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png: a label image .* RGB colour values"):
        read_objects([tmp_path / "colour.png"])


def test_a_folder_of_16_bit_label_images_has_objects_and_a_binary_one_has_none(
    tmp_path: Path,
) -> None:
    for name, mask in (("labels", np.array([[0, 3], [12, 0]], np.uint16)),
                       ("binary", np.array([[0, 65535], [0, 0]], np.uint16))):  # fmt: skip
        for kind in ("images", "masks"):
            (tmp_path / name / kind).mkdir(parents=True)
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / name / "images" / "a.png")
        Image.fromarray(mask).save(tmp_path / name / "masks" / "a.png")
    labelled = parse_spec(f"folder:{tmp_path / 'labels'}")
    assert labelled.objects and labelled.for_objects().class_names == (
        "background", "foreground", "foreground boundary", "foreground contact")  # fmt: skip
    assert labelled.for_objects().mask_mode == "objects"
    plain = parse_spec(f"folder:{tmp_path / 'binary'}")
    assert not plain.objects
    with pytest.raises(DataError, match="do not label each object"):
        plain.for_objects()


def touching_pairs(root: Path, count: int = 6, size: int = 48) -> Path:
    """A folder: data set of 16-bit label images, each two touching discs (ids 1 and 2) that
    a foreground mask would merge into one blob; the last two images are the test split."""
    rows, columns = np.mgrid[:size, :size]
    rng = np.random.default_rng(0)
    for index in range(count):
        split = "test" if index >= count - 2 else "train"
        cy, cx = rng.integers(16, size - 16, 2).tolist()
        labels = np.zeros((size, size), np.uint16)
        labels[(rows - cy) ** 2 + (columns - cx + 6) ** 2 <= 36] = 1
        labels[(rows - cy) ** 2 + (columns - cx - 6) ** 2 <= 36] = 2
        image = rng.normal(60, 10, (size, size)) + (labels > 0) * 120
        for kind, array in (("images", image.clip(0, 255).astype(np.uint8)), ("masks", labels)):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / kind / f"pair{index}.png")
    return root


def test_a_run_on_label_images_learns_the_object_target_and_is_scored_by_objects(
    tmp_path: Path,
) -> None:
    from tests.test_train import run_args
    from trainers.train import main

    data = touching_pairs(tmp_path / "data")
    main(run_args(data, tmp_path / "run", "--objects", "--steps", "6", "--in-channels", "1"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["objects"] is True and config["num_classes"] == 4
    assert config["classes"] == [
        "background", "foreground", "foreground boundary", "foreground contact"]  # fmt: skip
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert summary["objects"]["true_objects_total"] == 4  # two pairs in the test split
    rows = (tmp_path / "run" / "eval" / "objects.csv").read_text().splitlines()
    assert rows[0].startswith("id,dsb_score,ap50") and len(rows) == 3
