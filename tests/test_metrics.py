"""Tests for trainers.scores.metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.scores.metrics import (
    Confusion,
    binary_metrics,
    confusion,
    dice,
    hausdorff,
    hd95,
    iou,
    multiclass_metrics,
    precision,
    precision_recall_curve,
    recall,
    roc_auc,
    specificity,
    summarize,
)
from trainers.scores.scoring import binarize, checked_threshold, confusions, mean_overlap

# pred  1 1 1    target 1 0 0    tp: (0,0), (1,1)   fp: (0,1), (0,2)
#       0 1 0           1 1 0    fn: (1,0)          tn: (1,2)
PRED = np.array([[1, 1, 1], [0, 1, 0]], dtype=bool)
TARGET = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)


def mask(shape: tuple[int, int], *pixels: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for pixel in pixels:
        out[pixel] = True
    return out


def test_confusion_by_hand() -> None:
    assert confusion(PRED, TARGET) == Confusion(tp=2, fp=2, fn=1, tn=1)


def test_overlap_metrics_by_hand() -> None:
    cm = Confusion(tp=2, fp=2, fn=1, tn=1)
    assert dice(cm) == pytest.approx(4 / 7)  # 2*2 / (4 + 2 + 1)
    assert iou(cm) == pytest.approx(2 / 5)  # 2 / (2 + 2 + 1)
    assert precision(cm) == pytest.approx(1 / 2)  # 2 / (2 + 2)
    assert recall(cm) == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert specificity(cm) == pytest.approx(1 / 3)  # 1 / (1 + 2)


def test_roi_excludes_pixels() -> None:
    # Dropping column 2 removes fp (0,2) and tn (1,2): tp 2, fp 1, fn 1, tn 0.
    roi = np.array([[1, 1, 0], [1, 1, 0]], dtype=bool)
    cm = confusion(PRED, TARGET, roi)
    assert cm == Confusion(tp=2, fp=1, fn=1, tn=0)
    assert specificity(cm) == 0.0  # 0 / (0 + 1)


def test_binary_metrics_by_hand() -> None:
    # Every pixel of a 2-row mask is boundary. pred->target distances: (0,0) 0, (0,1) 1,
    # (0,2) sqrt2, (1,1) 0; target->pred: (0,0) 0, (1,0) 1, (1,1) 0. HD = sqrt2.
    # 95th percentiles (linear): [0, 0, 1, sqrt2] at rank 2.85 -> 1 + .85 (sqrt2 - 1);
    # [0, 0, 1] at rank 1.9 -> .9. HD95 is the larger.
    row = binary_metrics(PRED, TARGET)
    assert row == pytest.approx(
        {
            "dice": 4 / 7,
            "iou": 2 / 5,
            "precision": 1 / 2,
            "recall": 2 / 3,
            "specificity": 1 / 3,
            "hd": math.sqrt(2),
            "hd95": 1 + 0.85 * (math.sqrt(2) - 1),
            "empty_pred": False,
            "empty_target": False,
        }
    )


def test_both_empty() -> None:
    empty = np.zeros((4, 5), dtype=bool)
    row = binary_metrics(empty, empty)
    assert row["dice"] == 1.0 and row["iou"] == 1.0
    assert math.isnan(row["precision"]) and math.isnan(row["recall"])
    assert row["specificity"] == 1.0  # 20 / (20 + 0)
    assert row["hd"] == 0.0 and row["hd95"] == 0.0
    assert row["empty_pred"] and row["empty_target"]


def test_empty_prediction() -> None:
    target = mask((10, 10), (2, 3))
    row = binary_metrics(np.zeros_like(target), target)
    assert row["dice"] == 0.0 and row["iou"] == 0.0
    assert math.isnan(row["precision"])  # nothing predicted
    assert row["recall"] == 0.0
    assert row["specificity"] == 1.0
    assert row["hd"] == pytest.approx(math.sqrt(200))  # diagonal of a 10x10 image
    assert row["hd95"] == pytest.approx(math.sqrt(200))
    assert row["empty_pred"] and not row["empty_target"]


def test_empty_target() -> None:
    pred = mask((10, 10), (2, 3))
    row = binary_metrics(pred, np.zeros_like(pred))
    assert row["dice"] == 0.0 and row["precision"] == 0.0
    assert math.isnan(row["recall"])  # no target positives
    assert row["specificity"] == pytest.approx(99 / 100)
    assert not row["empty_pred"] and row["empty_target"]


def test_all_foreground() -> None:
    full = np.ones((3, 3), dtype=bool)
    row = binary_metrics(full, full)
    assert row["dice"] == 1.0 and row["precision"] == 1.0 and row["recall"] == 1.0
    assert math.isnan(row["specificity"])  # no target negatives
    assert row["hd"] == 0.0


def test_hausdorff_single_pixels() -> None:
    a, b = mask((10, 10), (0, 0)), mask((10, 10), (3, 4))
    assert hausdorff(a, b) == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    assert hausdorff(a, b, spacing=(2, 1)) == pytest.approx(math.sqrt(36 + 16))  # (3*2, 4*1)
    assert hausdorff(a, b, spacing=2.0) == pytest.approx(10.0)


def test_hd95_below_hd_with_one_outlier() -> None:
    # target: row 0 (10 pixels); pred: row 0 plus an outlier at (9, 0), 9 px below (0, 0).
    # pred->target distances: ten 0s and one 9; target->pred: all 0. HD = 9.
    # 95th percentile of 11 values: rank .95 * 10 = 9.5 -> halfway between 0 and 9 = 4.5.
    target = np.zeros((10, 10), dtype=bool)
    target[0] = True
    pred = target.copy()
    pred[9, 0] = True
    assert hausdorff(pred, target) == pytest.approx(9.0)
    assert hd95(pred, target) == pytest.approx(4.5)
    assert hausdorff(pred, target, percentile=95) == pytest.approx(4.5)


def test_hausdorff_uses_boundaries_not_solid_masks() -> None:
    # A 7x7 block vs the same block with a hole at (3, 3). The hole's boundary pixels, e.g.
    # (2, 3), are 2 px from the block's outer ring; solid masks would give only 1.
    block = np.ones((7, 7), dtype=bool)
    holed = block.copy()
    holed[3, 3] = False
    assert hausdorff(block, holed) == pytest.approx(2.0)


def test_hausdorff_empty_rules() -> None:
    empty = np.zeros((3, 4), dtype=bool)
    one = mask((3, 4), (1, 1))
    assert hausdorff(empty, empty) == 0.0
    assert hausdorff(one, empty) == pytest.approx(5.0)  # diagonal sqrt(3^2 + 4^2)
    assert hausdorff(empty, one, spacing=(2, 1)) == pytest.approx(math.sqrt(52))  # (6, 4)
    assert hd95(empty, one) == pytest.approx(5.0)


def test_hausdorff_roi_masks_inputs() -> None:
    pred = mask((10, 10), (0, 0), (9, 9))
    target = mask((10, 10), (0, 0))
    assert hausdorff(pred, target) == pytest.approx(math.sqrt(162))  # (9, 9) to (0, 0)
    roi = np.ones((10, 10), dtype=bool)
    roi[9, 9] = False
    assert hausdorff(pred, target, roi=roi) == 0.0


@pytest.mark.parametrize("spacing", [0.0, -1.0, (1.0,), (1.0, math.nan)])
def test_bad_spacing_raises(spacing: float | tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="spacing"):
        hausdorff(PRED, TARGET, spacing=spacing)


def test_bad_percentile_raises() -> None:
    with pytest.raises(ValueError, match=r"percentile.*got 101"):
        hausdorff(PRED, TARGET, percentile=101)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 2\)"):
        confusion(PRED, TARGET.T)
    with pytest.raises(ValueError, match=r"pred and roi.*\(2, 3\) and \(2, 2\)"):
        binary_metrics(PRED, TARGET, roi=np.ones((2, 2), dtype=bool))


def test_non_boolean_or_non_2d_masks_raise() -> None:
    with pytest.raises(TypeError, match="boolean mask, got dtype float64"):
        confusion(PRED.astype(float), TARGET)
    with pytest.raises(ValueError, match=r"2-D \(H, W\) or 3-D \(D, H, W\)"):
        confusion(PRED[None, None], TARGET[None, None])


def test_multiclass_metrics_by_hand() -> None:
    # class 1: pred {(0,1), (0,2)}, target {(0,1), (1,0)} -> tp 1, fp 1, fn 1: dice 1/2;
    #   HD: (0,2)->(0,1) = 1, (1,0)->(0,1) = sqrt2.
    # class 2: predicted at (1,0), (1,1) but absent from the target -> dice 0, HD diagonal.
    # class 3: absent from both -> dice 1, HD 0.
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 0], [1, 0, 0]])
    result = multiclass_metrics(pred, target, num_classes=4)
    assert sorted(result) == [1, 2, 3]
    assert result[1]["dice"] == pytest.approx(0.5)
    assert result[1]["hd"] == pytest.approx(math.sqrt(2))
    assert result[2]["dice"] == 0.0 and result[2]["empty_target"]
    assert result[2]["hd"] == pytest.approx(math.sqrt(13))  # 2x3 image diagonal
    assert result[3]["dice"] == 1.0 and result[3]["iou"] == 1.0 and result[3]["hd"] == 0.0
    assert math.isnan(result[3]["precision"])


def test_multiclass_include_background() -> None:
    # class 0: pred {(0,0), (1,2)}, target {(0,0), (0,2), (1,1), (1,2)}: tp 2, fp 0, fn 2.
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = np.array([[0, 1, 0], [1, 0, 0]])
    result = multiclass_metrics(pred, target, 3, include_background=True)
    assert sorted(result) == [0, 1, 2]
    assert result[0]["dice"] == pytest.approx(4 / 6)
    assert result[0]["recall"] == pytest.approx(0.5)


def test_multiclass_bad_labels_raise() -> None:
    labels = np.array([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"\[0, 3\), got \[3\]"):
        multiclass_metrics(labels, labels, 3)
    with pytest.raises(TypeError, match="integer label map"):
        multiclass_metrics(labels.astype(float), labels, 4)
    with pytest.raises(ValueError, match="num_classes"):
        multiclass_metrics(labels, labels, 1)


def test_summarize_excludes_nan_and_worst_case_distances() -> None:
    rows = [
        {"dice": 0.5, "precision": 0.5, "hd": 2.0, "empty_pred": False, "empty_target": False},
        {"dice": 1.0, "precision": math.nan, "hd": 0.0, "empty_pred": True, "empty_target": True},
        {"dice": 0.0, "precision": math.nan, "hd": 14.0, "empty_pred": True, "empty_target": False},
    ]
    summary = summarize(rows)
    assert set(summary) == {"dice", "precision", "hd"}  # flags are not metrics
    # dice: the both-empty row's 1 is left out (and counted): mean .25, std .25.
    assert summary["dice"] == pytest.approx({"mean": 0.25, "std": 0.25, "n": 2, "excluded": 1})
    # precision: only .5 is defined.
    assert summary["precision"] == pytest.approx({"mean": 0.5, "std": 0.0, "n": 1, "excluded": 2})
    # hd: the one-empty row's 14 is left out; both-empty 0 stays: mean 1, std 1.
    assert summary["hd"] == pytest.approx({"mean": 1.0, "std": 1.0, "n": 2, "excluded": 1})


def test_a_class_absent_from_prediction_and_target_is_left_out_of_the_mean() -> None:
    """Class 1 found with Dice 0.5, class 2 absent from both: the mean over classes is 0.5 (not
    0.75, as counting the absent class as a perfect 1 would make it), one case excluded."""
    target = np.zeros((4, 4), np.int64)
    target[0, :2] = 1
    pred = np.zeros((4, 4), np.int64)
    pred[0, 1:3] = 1
    rows = multiclass_metrics(pred, target, 3)
    assert rows[1]["dice"] == pytest.approx(0.5) and rows[2]["dice"] == 1.0  # per row: agreement
    summary = summarize([{k: v for k, v in row.items()} for row in rows.values()])
    assert summary["dice"] == pytest.approx({"mean": 0.5, "std": 0.0, "n": 1, "excluded": 1})
    assert summary["iou"] == pytest.approx({"mean": 1 / 3, "std": 0.0, "n": 1, "excluded": 1})
    assert mean_overlap(confusions(pred, target, np.ones((4, 4), bool), 3)) == pytest.approx(
        (0.5, 1 / 3)
    )  # validation's mean, the same rule


def test_summarize_everything_excluded_gives_nan_and_zero_n() -> None:
    rows = [{"hd95": 5.0, "empty_pred": True, "empty_target": False}] * 2
    stats = summarize(rows)["hd95"]
    assert math.isnan(stats["mean"]) and math.isnan(stats["std"])
    assert stats["n"] == 0 and stats["excluded"] == 2


def test_summarize_binary_metrics_rows() -> None:
    # Row 1 is the hand case (dice 4/7); row 2 has an empty prediction (dice 0, hd excluded).
    rows = [binary_metrics(PRED, TARGET), binary_metrics(np.zeros_like(PRED), TARGET)]
    summary = summarize(rows)
    assert summary["dice"]["mean"] == pytest.approx(2 / 7)
    assert summary["hd"] == pytest.approx({"mean": math.sqrt(2), "std": 0.0, "n": 1, "excluded": 1})
    assert summary["precision"]["excluded"] == 1


def test_summarize_rejects_empty_and_ragged_rows() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        summarize([])
    with pytest.raises(ValueError, match=r"'hd'.*\[1\]"):
        summarize([{"dice": 1.0, "hd": 0.0}, {"dice": 1.0}])


def test_precision_recall_curve_by_hand() -> None:
    # down to .9: tp 1 fp 0 -> P 1,   R .5, F1 2/3   (scores > .8)
    #         .8: tp 1 fp 1 -> P .5,  R .5, F1 .5    (scores > .7)
    #         .7: tp 2 fp 1 -> P 2/3, R 1,  F1 .8    (scores > .6)  <- best
    #         .6: tp 2 fp 2 -> P .5,  R 1,  F1 2/3   (scores > just below .6)
    # AP = (.5 - 0) * 1 + (1 - .5) * 2/3 = 0.8333...
    curve = precision_recall_curve(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool))
    np.testing.assert_allclose(curve.thresholds, [0.8, 0.7, 0.6, np.nextafter(0.6, 0)])
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1, 1])
    assert curve.average_precision == pytest.approx(0.5 + (2 / 3) * 0.5)
    assert curve.best_f1 == pytest.approx(0.8)
    assert curve.best_threshold == pytest.approx(0.6)


def test_each_curve_point_is_what_predicting_above_its_threshold_gives() -> None:
    """The curve follows the project's one rule, probability > threshold (binarize), as
    evaluation and the demo apply it: at every point, precision and recall recomputed."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # many ties
    target = rng.random(200) < scores
    curve = precision_recall_curve(scores, target)
    for k, threshold in enumerate(curve.thresholds):
        cm = confusion(binarize(scores, threshold)[None], target[None])
        assert (precision(cm), recall(cm)) == pytest.approx((curve.precision[k], curve.recall[k]))


def test_threshold_near_prefers_half_where_the_curve_is_flat() -> None:
    # Ten positives scored .95 down to .05 by .1, ten negatives .04 down to .001: F1 reaches 1
    # with every score above .04 and is within .002 of it nowhere else, so .04 it is...
    positives = np.linspace(0.95, 0.05, 10)
    negatives = np.linspace(0.04, 0.001, 10)
    scores = np.concatenate([positives, negatives])
    target = np.arange(20) < 10
    curve = precision_recall_curve(scores, target)
    assert curve.best_threshold == pytest.approx(0.04)
    assert curve.threshold_near(0.5) == pytest.approx(0.04)
    # ... unless the tolerance reaches the F1 above .35 (6 of 10 found: P 1, R .6, F1 .75).
    assert curve.threshold_near(0.5, tolerance=0.26) == pytest.approx(0.35)
    np.testing.assert_allclose(curve.f1[:2], [2 / 11, 2 * 0.2 / 1.2])


def test_threshold_near_picks_the_nearest_within_the_tolerance() -> None:
    # Positives .9 .6, negatives .3 .1: F1 2/3 above .6, 1 above .3 (best), .8 above .1, 2/3
    # above just below .1. Within .21 of the best: above .3 and above .1; .3 is nearer .5, .1
    # nearer .15.
    curve = precision_recall_curve(np.array([0.9, 0.6, 0.3, 0.1]), np.array([1, 1, 0, 0], bool))
    np.testing.assert_allclose(curve.f1, [2 / 3, 1, 0.8, 2 / 3])
    assert curve.threshold_near(0.5, tolerance=0.21) == pytest.approx(0.3)
    assert curve.threshold_near(0.15, tolerance=0.21) == pytest.approx(0.1)


def test_precision_recall_curve_ties_and_roi_on_images() -> None:
    # Ties: scores [.5, .5, .2], targets [1, 0, 1]. At .5: P .5, R .5; at .2: P 2/3, R 1.
    # AP = .5 * .5 + .5 * 2/3.
    tied = precision_recall_curve(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 1], bool))
    assert tied.average_precision == pytest.approx(0.25 + 1 / 3)
    # A 2x2 score map with the negative .8 outside the roi ranks both positives first: AP 1.
    scores = np.array([[0.9, 0.8], [0.7, 0.6]])
    target = np.array([[1, 0], [1, 0]], dtype=bool)
    roi = np.array([[1, 0], [1, 1]], dtype=bool)
    assert precision_recall_curve(scores, target).average_precision == pytest.approx(5 / 6)
    assert precision_recall_curve(scores, target, roi).average_precision == pytest.approx(1.0)


def test_roc_auc_by_hand() -> None:
    # Positive-negative pairs ranked correctly: .35 > .1, .8 > .1, .8 > .4; .35 < .4 -> 3/4.
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(scores, np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)


def test_roc_auc_ties_count_half() -> None:
    # Pairs: (.5 vs .5) tie -> 1/2, (.5 vs .1) -> 1; AUC = 1.5 / 2.
    scores = np.array([0.5, 0.5, 0.1])
    assert roc_auc(scores, np.array([1, 0, 0], bool)) == pytest.approx(0.75)


def test_curves_reject_undefined_and_mismatched_inputs() -> None:
    scores = np.array([0.2, 0.8])
    with pytest.raises(ValueError, match="no positive"):
        precision_recall_curve(scores, np.zeros(2, bool))
    with pytest.raises(ValueError, match="no positive"):
        roc_auc(scores, np.zeros(2, bool))
    with pytest.raises(ValueError, match="no negative"):
        roc_auc(scores, np.ones(2, bool))
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        roc_auc(scores, np.ones(3, bool))
    with pytest.raises(ValueError, match="finite"):
        roc_auc(np.array([0.2, math.nan]), np.array([1, 0], bool))


@pytest.mark.parametrize(
    "value", [0, 1, 0.0, 1.0, -0.1, 1.5, math.nan, math.inf, True, "0.5", None]
)
def test_a_threshold_outside_the_open_unit_interval_is_refused(value) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        checked_threshold(value)


def test_a_threshold_inside_the_open_unit_interval_is_a_float() -> None:
    assert checked_threshold(0.25) == 0.25 and type(checked_threshold(0.25)) is float
    assert checked_threshold(1e-9) == 1e-9
