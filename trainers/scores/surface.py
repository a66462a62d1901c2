"""The scores a radiologist reads for a label volume, per class, in millimetres and millilitres.

    rows = volume_scores(pred, target, spacing=(2.0, 0.8, 0.8), num_classes=3)
    rows[1]  # {"dice", "iou", "hd95", "msd", "nsd", "volume_target_ml", "volume_pred_ml", ...}

Distances are exact Euclidean ones between boundary voxel centres (`metrics.directed_distances`),
with the voxel spacing of each axis, so an anisotropic volume is measured as it lies in the
body. HD95 is the larger of the two directed 95th percentiles (MONAI's); the mean surface
distance (msd) the mean over both boundaries' distances together (the average symmetric surface
distance); the normalized surface distance (nsd, the Decathlon's second ranking metric) the share
of both boundaries' voxels within `tolerance_mm` of the other boundary (counted on boundary
voxels, not on surface elements as DeepMind's surface-distance library does: close, not equal, on
coarse grids). Empty masks follow `metrics`' rules: both empty, msd 0 and nsd 1 (left out of the
means); exactly one, msd the volume's diagonal and nsd 0 (msd left out of the means).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trainers.scores import metrics

NSD_TOLERANCE_MM = 1.0  # the tolerance used here by default, stated beside every nsd


def surface_scores(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> dict[str, float]:
    """HD95, mean surface distance and normalized surface distance of two boolean masks."""
    empty_pred, empty_target = not pred.any(), not target.any()
    if empty_pred and empty_target:
        return {"hd95": 0.0, "msd": 0.0, "nsd": 1.0}
    if empty_pred or empty_target:
        diagonal = math.hypot(*(s * n for s, n in zip(spacing, pred.shape, strict=True)))
        return {"hd95": diagonal, "msd": diagonal, "nsd": 0.0}
    to_target, to_pred = metrics.directed_distances(pred, target, spacing)
    both = np.concatenate([to_target, to_pred])
    return {
        "hd95": max(float(np.percentile(to_target, 95)), float(np.percentile(to_pred, 95))),
        "msd": float(both.mean()),
        "nsd": float((both <= tolerance_mm).mean()),
    }


def volume_scores(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    spacing: Sequence[float],
    num_classes: int,
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> dict[int, dict[str, float]]:
    """Per foreground class c of two label volumes (D x H x W integers): Dice, IoU, HD95, msd,
    nsd, the volumes of target and prediction in mL and their difference (prediction minus
    target), with the empty flags `metrics.summarize` reads."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = {}
    for c in range(1, max(num_classes, 2)):
        p, t = pred == c, target == c
        found = metrics.confusion(p, t)
        predicted, wanted = int(p.sum()), int(t.sum())
        rows[c] = {
            "dice": metrics.dice(found),
            "iou": metrics.iou(found),
            **surface_scores(p, t, spacing, tolerance_mm),
            "volume_target_ml": wanted * voxel_ml,
            "volume_pred_ml": predicted * voxel_ml,
            "volume_difference_ml": (predicted - wanted) * voxel_ml,
            "empty_pred": predicted == 0,
            "empty_target": wanted == 0,
        }
    return rows


def class_volumes_ml(labels: np.ndarray, spacing: Sequence[float], num_classes: int) -> list[float]:
    """The volume of each foreground class 1..num_classes-1 in a label volume, in mL."""
    counts = np.bincount(labels.ravel(), minlength=max(num_classes, 2))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return [float(count) * voxel_ml for count in counts[1 : max(num_classes, 2)]]
