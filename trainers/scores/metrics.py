"""Evaluation metrics for segmentation masks (numpy and scipy, no torch).

Binary masks are boolean arrays of shape (H, W), or (D, H, W) for volumes (spacing then one per
axis, in mm; `trainers.scores.surface` adds the surface and volume scores of 3D). ``roi`` is an
optional boolean region of interest of the same shape (e.g. a field of view); only pixels inside
it count.

Empty-mask rules:
    - dice and iou are 1.0 when prediction and target are both empty (agreement) and 0.0 when
      exactly one is empty (the worst case, as the formula gives).
    - precision, recall and specificity are ``math.nan`` when their denominator is 0 (no
      predicted positives, no target positives, no target negatives): they are undefined.
    - hausdorff and hd95 are 0.0 when both masks are empty and the image diagonal in spacing
      units, sqrt((H * sy)**2 + (W * sx)**2), when exactly one is (the worst case).
    - summarize leaves out NaN values, for hd, hd95 and msd the rows where exactly one mask is
      empty (their worst-case value stays in the per-image row), and for dice, iou and nsd the
      rows where both are (a class absent from prediction and target: a 1 that says nothing,
      which would inflate a mean over classes; nnU-Net leaves it out too); all are counted in
      ``excluded``. A metric with no value left has mean and std NaN and n == 0.
No other NaN is returned.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

__all__ = [
    "Confusion",
    "PRCurve",
    "binary_metrics",
    "confusion",
    "dice",
    "directed_distances",
    "hausdorff",
    "hd95",
    "iou",
    "multiclass_metrics",
    "precision",
    "precision_recall_curve",
    "recall",
    "roc_auc",
    "specificity",
    "summarize",
]

FLAGS = ("empty_pred", "empty_target")
DISTANCES = ("hd", "hd95", "msd")  # left out where exactly one mask is empty
OVERLAPS = ("dice", "iou", "nsd")  # left out where both are

Spacing = float | tuple[float, ...]


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of a binary prediction against a target."""

    tp: int
    fp: int
    fn: int
    tn: int


@dataclass(frozen=True, eq=False)
class PRCurve:
    """Precision and recall at each distinct score, thresholds in decreasing order.

    ``precision[k]`` and ``recall[k]`` are those of predicting ``scores > thresholds[k]``, the
    rule evaluation, validation and the demo apply (`trainers.scores.scoring.binarize`): each
    threshold is the next distinct score below the point's lowest positive score.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    best_f1: float
    best_threshold: float

    @property
    def f1(self) -> np.ndarray:
        """F1 (Dice) at each threshold; 0 where precision and recall are both 0."""
        return _f1(self.precision, self.recall)

    def threshold_near(self, preferred: float = 0.5, tolerance: float = 0.002) -> float:
        """The threshold nearest ``preferred`` among those whose F1 is within ``tolerance`` of
        the best. Where the curve is flat, as it is for a model whose probabilities sit near 0
        and 1, where exactly the best point falls is noise; ``preferred`` is the neutral choice.
        """
        close = np.flatnonzero(self.f1 >= self.best_f1 - tolerance)
        return float(self.thresholds[close[np.argmin(np.abs(self.thresholds[close] - preferred))]])


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a boolean mask, got dtype {arr.dtype}; threshold or compare it first"
        )
    return arr


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )


def _masked_pair(
    pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated masks with pixels outside roi cleared, and the number of pixels that count."""
    pred, target = _as_mask(pred, "pred"), _as_mask(target, "target")
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"masks must be 2-D (H, W) or 3-D (D, H, W), got pred of shape {pred.shape}"
        )
    _same_shape(pred, target, "pred", "target")
    if roi is None:
        return pred, target, pred.size
    roi = _as_mask(roi, "roi")
    _same_shape(pred, roi, "pred", "roi")
    return pred & roi, target & roi, int(np.count_nonzero(roi))


def _count(pred: np.ndarray, target: np.ndarray, n: int) -> Confusion:
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(target)) - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=n - tp - fp - fn)


def confusion(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None) -> Confusion:
    """Count true/false positives and negatives, only inside roi when given."""
    return _count(*_masked_pair(pred, target, roi))


def _ratio(num: int, den: int, undefined: float) -> float:
    return num / den if den else undefined


def dice(cm: Confusion) -> float:
    """Dice coefficient (F1), 2tp / (2tp + fp + fn); 1.0 when both masks are empty."""
    return _ratio(2 * cm.tp, 2 * cm.tp + cm.fp + cm.fn, 1.0)


def iou(cm: Confusion) -> float:
    """Intersection over union, tp / (tp + fp + fn); 1.0 when both masks are empty."""
    return _ratio(cm.tp, cm.tp + cm.fp + cm.fn, 1.0)


def precision(cm: Confusion) -> float:
    """tp / (tp + fp); NaN when nothing is predicted positive."""
    return _ratio(cm.tp, cm.tp + cm.fp, math.nan)


def recall(cm: Confusion) -> float:
    """Sensitivity, tp / (tp + fn); NaN when the target has no positives."""
    return _ratio(cm.tp, cm.tp + cm.fn, math.nan)


def specificity(cm: Confusion) -> float:
    """tn / (tn + fp); NaN when the target has no negatives."""
    return _ratio(cm.tn, cm.tn + cm.fp, math.nan)


def _spacing(spacing: Spacing | None, ndim: int = 2) -> tuple[float, ...]:
    """The size of a pixel (or voxel) along each of `ndim` axes: one number for all, or one each."""
    if spacing is None:
        return (1.0,) * ndim
    sides = (spacing,) * ndim if isinstance(spacing, numbers.Real) else tuple(spacing)
    if len(sides) != ndim or not all(
        isinstance(s, numbers.Real) and math.isfinite(s) and s > 0 for s in sides
    ):
        raise ValueError(
            f"spacing must be a positive number or {ndim} of them (one per axis), got {spacing!r}"
        )
    return tuple(float(side) for side in sides)


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def directed_distances(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """For each boundary pixel (voxel) of `pred`, the distance to the nearest of `target`'s, and
    the other way round, in spacing units; both masks non-empty, of any number of axes."""
    points_pred = np.argwhere(_boundary(pred)) * spacing
    points_target = np.argwhere(_boundary(target)) * spacing
    # Nearest boundary point by k-d tree: exact Euclidean distances, and faster than a dense
    # distance transform because boundaries are sparse.
    return (
        KDTree(points_target, leafsize=32).query(points_pred)[0],
        KDTree(points_pred, leafsize=32).query(points_target)[0],
    )


def _hausdorff(
    pred: np.ndarray,
    target: np.ndarray,
    spacing: tuple[float, ...],
    percentiles: Sequence[float | None],
) -> list[float]:
    """Hausdorff distance of masked inputs for each percentile (None: the maximum)."""
    empty_pred, empty_target = not pred.any(), not target.any()
    if empty_pred and empty_target:
        return [0.0] * len(percentiles)
    if empty_pred or empty_target:
        diagonal = math.hypot(
            *(side * size for side, size in zip(spacing, pred.shape, strict=True))
        )
        return [diagonal] * len(percentiles)
    directed = directed_distances(pred, target, spacing)
    return [
        max(float(d.max() if q is None else np.percentile(d, q)) for d in directed)
        for q in percentiles
    ]


def hausdorff(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    spacing: Spacing | None = None,
    roi: np.ndarray | None = None,
    percentile: float | None = None,
) -> float:
    """Symmetric Hausdorff distance between the mask boundaries, in spacing units.

    The boundary is ``mask ^ binary_erosion(mask)`` (cross element; image-edge pixels are
    boundary); distances are exact Euclidean ones between boundary pixel centres. With
    ``percentile`` the result is the larger of the two directed distances' percentiles
    (MONAI's HausdorffDistanceMetric). Both empty: 0.0; exactly one empty: the image diagonal.
    """
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be None or in [0, 100], got {percentile!r}")
    pred, target, _ = _masked_pair(pred, target, roi)
    return _hausdorff(pred, target, _spacing(spacing, pred.ndim), [percentile])[0]


def hd95(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    spacing: Spacing | None = None,
    roi: np.ndarray | None = None,
) -> float:
    """95th-percentile Hausdorff distance, ``hausdorff(..., percentile=95)``."""
    return hausdorff(pred, target, spacing=spacing, roi=roi, percentile=95)


def binary_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    roi: np.ndarray | None = None,
    spacing: Spacing | None = None,
) -> dict[str, float]:
    """Overlap and distance metrics of one binary mask, plus empty_pred/empty_target flags."""
    pred, target, n = _masked_pair(pred, target, roi)
    cm = _count(pred, target, n)
    hd, hd_95 = _hausdorff(pred, target, _spacing(spacing, pred.ndim), [None, 95])
    return {
        "dice": dice(cm),
        "iou": iou(cm),
        "precision": precision(cm),
        "recall": recall(cm),
        "specificity": specificity(cm),
        "hd": hd,
        "hd95": hd_95,
        "empty_pred": cm.tp + cm.fp == 0,
        "empty_target": cm.tp + cm.fn == 0,
    }


def _as_labels(labels: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}), got {np.unique(arr[bad])[:8].tolist()}"
        )
    return arr


def multiclass_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    roi: np.ndarray | None = None,
    spacing: Spacing | None = None,
    include_background: bool = False,
) -> dict[int, dict[str, float]]:
    """binary_metrics of (pred == c, target == c) per class c, class 0 only if requested."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    pred = _as_labels(pred, "pred", num_classes)
    target = _as_labels(target, "target", num_classes)
    first = 0 if include_background else 1
    return {
        c: binary_metrics(pred == c, target == c, roi=roi, spacing=spacing)
        for c in range(first, num_classes)
    }


def summarize(rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, population std, n used and n excluded of each metric over per-image rows.

    NaN values are excluded, and so are hd/hd95/msd of rows where exactly one of empty_pred and
    empty_target is true, and dice/iou/nsd of rows where both are. Flags are not summarized. With
    nothing left, mean and std are NaN.
    """
    if not rows:
        raise ValueError("summarize needs at least one row, got an empty sequence")
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in FLAGS]
    empty = np.array([[bool(row.get(flag)) for flag in FLAGS] for row in rows]).reshape(-1, 2)
    one_empty, both_empty = empty[:, 0] != empty[:, 1], empty.all(axis=1)
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        missing = [i for i, row in enumerate(rows) if key not in row]
        if missing:
            raise ValueError(f"every row must have the key {key!r}, rows {missing[:8]} lack it")
        values = np.array([row[key] for row in rows], dtype=np.float64)
        keep = ~np.isnan(values)
        if key in DISTANCES:
            keep &= ~one_empty
        if key in OVERLAPS:
            keep &= ~both_empty
        kept = values[keep]
        summary[key] = {
            "mean": float(kept.mean()) if kept.size else math.nan,
            "std": float(kept.std()) if kept.size else math.nan,
            "n": int(kept.size),
            "excluded": int(values.size - kept.size),
        }
    return summary


def _ranked_counts(
    scores: np.ndarray, target: np.ndarray, roi: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score, highest score first."""
    scores, target = np.asarray(scores), _as_mask(target, "target")
    if not (np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)):
        raise TypeError(f"scores must be real numbers, got dtype {scores.dtype}")
    _same_shape(scores, target, "scores", "target")
    if roi is not None:
        roi = _as_mask(roi, "roi")
        _same_shape(scores, roi, "scores", "roi")
        scores, target = scores[roi], target[roi]
    scores, target = scores.ravel().astype(np.float64), target.ravel()
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite, got NaN or infinite values")
    if not target.any():
        raise ValueError(
            "target has no positive pixels (inside roi): recall and the true positive rate "
            "divide by the number of positives, so the curve is undefined"
        )
    order = np.argsort(-scores, kind="stable")
    scores, target = scores[order], target[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(target)[last]
    return tps, last + 1 - tps, scores[last]


def precision_recall_curve(
    scores: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None
) -> PRCurve:
    """Exact precision-recall curve over every distinct score, with AP and the best-F1 point.

    Average precision is sklearn's step-wise sum over thresholds of (R_n - R_{n-1}) * P_n.
    """
    tps, fps, distinct = _ranked_counts(scores, target, roi)
    # `> thresholds[k]` keeps the scores down to distinct[k]: the next lower score is the cut.
    thresholds = np.r_[distinct[1:], np.nextafter(distinct[-1], -np.inf)]
    prec = tps / (tps + fps)
    rec = tps / tps[-1]
    average_precision = float(np.sum(np.diff(rec, prepend=0.0) * prec))
    f1 = _f1(prec, rec)
    best = int(np.argmax(f1))
    return PRCurve(
        precision=prec,
        recall=rec,
        thresholds=thresholds,
        average_precision=average_precision,
        best_f1=float(f1[best]),
        best_threshold=float(thresholds[best]),
    )


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    product = 2 * precision * recall
    return np.divide(product, total, out=np.zeros_like(total), where=total > 0)


def roc_auc(scores: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None) -> float:
    """Exact trapezoidal area under the ROC curve; tied scores count half, as in sklearn."""
    tps, fps, _ = _ranked_counts(scores, target, roi)
    if fps[-1] == 0:
        raise ValueError(
            "target has no negative pixels (inside roi): the false positive rate divides by "
            "the number of negatives, so the ROC curve is undefined"
        )
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))
