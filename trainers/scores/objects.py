"""Objects, scored as the field scores them: label images (one id per object, 0 background), the
overlaps of a prediction's objects with a target's, and the scores built on them.

    labels = objects_of(probabilities, threshold, object_target=True)  # a label image
    scores = object_scores(labels, true_labels)
    scores["dsb_score"], scores["ap50"], scores["pq"], scores["aji"], scores["count_error"]

A model trained on the object target (`trainers.data.targets`: background, interior, boundary)
has its objects split by a seeded watershed (`split_objects`); any other binary model's objects
are its mask's connected components. Such a model's pixels (its mask in the demo and from
`trainers.predict`, what evaluation scores on pixels) are its `foreground`: background
probability below one half, the region the watershed grows through. A label image is written
by `write_labels` (16-bit PNG, or 32-bit TIFF past 65,535 objects).

Definitions (the empty cases are in `object_scores`):
- a predicted and a true object **match at IoU threshold t** when their IoU is strictly above t
  (the 2018 Data Science Bowl's rule; Cellpose counts IoU >= t). For t >= 0.5 an object can
  match at most one other, so the matching is unique without an assignment step.
- **DSB score**: the mean over t = 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN) (Kaggle's score
  of one image; the data set's score is the mean over images).
- **AP50**: TP / (TP + FP + FN) at t = 0.5, the "average precision" that Cellpose and StarDist
  report; **F1 at 0.5**: 2 TP / (2 TP + FP + FN), with precision and recall.
- **Panoptic quality** (Kirillov et al. 2019) at t = 0.5: SQ (the mean IoU of the matches) times
  RQ (TP / (TP + FP / 2 + FN / 2)).
- **Aggregated Jaccard index** (Kumar et al. 2017): each true object with the predicted object
  of highest IoU with it; the sum of their intersections over the sum of their unions plus the
  areas of the predicted objects no true object chose.
- **V_Rand and V_Info** (the ISBI 2012 challenge's scores, Arganda-Carreras et al. 2015): the
  foreground-restricted Rand and information-theoretic F-scores of the contingency table of the
  two segmentations over the pixels the target labels (target 0 is left out; the prediction's
  0 counts as one segment, as scikit-image's `adapted_rand_error` counts it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # the DSB score's 0.50..0.95
OBJECT_METRICS = (
    "dsb_score",
    "ap50",
    "f1_50",
    "precision50",
    "recall50",
    "pq",
    "sq",
    "rq",
    "aji",
    "objects",
    "true_objects",
    "count_error",
)


def check_labels(labels: np.ndarray, name: str | Path = "labels") -> np.ndarray:
    """`labels` as an integer H x W array, or a ValueError naming `name` and what it holds."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: a label image is H x W, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int32)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: label ids must be integers, found {labels.dtype} values")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: label ids must be 0 (background) or positive, found negatives")
    return labels


def components(mask: np.ndarray) -> np.ndarray:
    """The 4-connected components of a binary mask as a label image (int32, ids from 1)."""
    labels, _ = ndimage.label(np.asarray(mask, bool))
    return labels.astype(np.int32, copy=False)


MIN_AREA = 40  # pixels: a smaller split-off piece is a fragment, not an object


def foreground(probabilities: np.ndarray) -> np.ndarray:
    """The H x W foreground of an object model's K x H x W probabilities: background probability
    below one half (1 - p_background > 0.5, interior and rims together). The watershed of
    `split_objects` grows through exactly these pixels, and evaluation scores them on pixels;
    the most probable class would call a pixel of (0.4, 0.3, 0.3) background, though the model
    gives it 0.6 to be part of an object."""
    return probabilities[0] < 0.5


def split_objects(probabilities: np.ndarray, min_area: int = MIN_AREA) -> np.ndarray:
    """The objects (int32 label image) of the object target's K x H x W probabilities
    (background, interior, boundary, contact; a model of the earlier target has no contact
    channel): each connected interior (interior the most probable class, opened by one pixel
    so that a thread does not join two) is a seed, grown by a watershed over the boundary and
    contact probability through the `foreground` (background below one half);
    foreground that no seed reaches is an object of its own; objects under `min_area` pixels are
    dropped. The opening and `MIN_AREA` were chosen on DSB 2018's validation images
    (docs/objects.md)."""
    from skimage.segmentation import watershed

    boundary = probabilities[2:].sum(0)
    seeds = components(ndimage.binary_opening(probabilities.argmax(0) == 1))
    inside = foreground(probabilities)
    labels = watershed(boundary, markers=seeds, mask=inside).astype(np.int32)
    rest = components(inside & (labels == 0))
    labels[rest > 0] = rest[rest > 0] + labels.max()
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    return sequential(labels)[0]


def objects_of(probabilities: np.ndarray, threshold: float, *, object_target: bool) -> np.ndarray:
    """The objects of a model's K x H x W probabilities as a label image: split by
    `split_objects` for a model of the object target, else the connected components of the
    foreground (probability above `threshold`, or any class but the background)."""
    from trainers.scores.scoring import class_map  # the project's one threshold rule

    if object_target:
        return split_objects(probabilities)
    return components(class_map(probabilities, threshold) > 0)


def sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """`labels` renumbered 1..n in the order of their ids (0 stays 0), and n."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids.size and ids[0] == 0:
        return inverse.reshape(labels.shape).astype(np.int32), ids.size - 1
    return (inverse + 1).reshape(labels.shape).astype(np.int32), ids.size


def write_labels(labels: np.ndarray, stem: Path) -> Path:
    """Write a label image as `STEM_labels.png` (16-bit) while its ids fit, else as
    `STEM_labels.tif` (32-bit, zlib), whole or not at all; napari, Fiji and QuPath open both.
    Returns the file written."""
    from zoo._files import atomic_write  # zoo imports torch: only where a file is written

    labels = check_labels(labels, stem)
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        path = stem.with_name(f"{stem.name}_labels.png")
        pixels = labels.astype(np.uint16)
        atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
        return path
    import tifffile

    path = stem.with_name(f"{stem.name}_labels.tif")
    pixels = labels.astype(np.uint32)
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, pixels, compression="zlib"))
    return path


@dataclass(frozen=True)
class Overlaps:
    """The overlapping pairs of a prediction's and a target's objects (ids renumbered 1..n):
    object areas by id (index 0 unused), and per pair its true id, predicted id, intersection
    and union. Only pairs that overlap are held, so ten thousand objects cost no dense table."""

    true_areas: np.ndarray
    pred_areas: np.ndarray
    true_ids: np.ndarray
    pred_ids: np.ndarray
    intersections: np.ndarray

    @property
    def unions(self) -> np.ndarray:
        return self.true_areas[self.true_ids] + self.pred_areas[self.pred_ids] - self.intersections

    @property
    def ious(self) -> np.ndarray:
        return self.intersections / self.unions

    @property
    def counts(self) -> tuple[int, int]:
        """(true objects, predicted objects)."""
        return len(self.true_areas) - 1, len(self.pred_areas) - 1

    def hits(self, threshold: float) -> np.ndarray:
        """The pairs that match at `threshold` (IoU strictly above it; unique for t >= 0.5)."""
        if threshold < 0.5:
            raise ValueError(f"matching by IoU > t is unique only for t >= 0.5, got {threshold}")
        return self.ious > threshold


def overlaps(pred: np.ndarray, target: np.ndarray) -> Overlaps:
    """The overlaps of two label images of one size (any integer ids, 0 background)."""
    pred, target = check_labels(pred, "prediction"), check_labels(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"prediction is {pred.shape} but target is {target.shape}")
    (pred, n_pred), (target, n_true) = sequential(pred), sequential(target)
    pred_areas = np.bincount(pred.ravel(), minlength=n_pred + 1)
    true_areas = np.bincount(target.ravel(), minlength=n_true + 1)
    both = (pred > 0) & (target > 0)
    pairs, intersections = np.unique(
        target[both].astype(np.int64) * (n_pred + 1) + pred[both], return_counts=True
    )
    return Overlaps(
        true_areas, pred_areas, pairs // (n_pred + 1), pairs % (n_pred + 1), intersections
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _empty(other_side: int) -> float:
    """A ratio whose own side is empty: 0 when the other side has objects, else undefined."""
    return 0.0 if other_side else math.nan


def object_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The object scores (`OBJECT_METRICS`) of a predicted label image against a true one.

    Empty cases: with objects in only one, every ratio is 0 (precision when nothing is
    predicted, recall when nothing is there to find, included); with no object in either, the
    ratios are undefined (NaN: evaluation leaves the image out of their means and counts it as
    excluded, as it leaves out and counts the pixel Dice of an image empty on both sides) and
    the count error is 0."""
    return scores_of(overlaps(pred, target))


def scores_of(found: Overlaps) -> dict[str, float]:
    """`object_scores` of overlaps already counted."""
    n_true, n_pred = found.counts
    ious = found.ious
    per_threshold = []
    for t in IOU_THRESHOLDS:
        tp = int((ious > t).sum())
        per_threshold.append(_ratio(tp, n_true + n_pred - tp))  # TP / (TP + FP + FN)
    hits = found.hits(0.5)
    tp, fp, fn = int(hits.sum()), n_pred - int(hits.sum()), n_true - int(hits.sum())
    sq = float(ious[hits].mean()) if tp else (math.nan if n_true + n_pred == 0 else 0.0)
    rq = _ratio(tp, tp + (fp + fn) / 2)
    return {
        "dsb_score": float(np.mean(per_threshold)),
        "ap50": per_threshold[0],
        "f1_50": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision50": _ratio(tp, n_pred) if n_pred else _empty(n_true),
        "recall50": _ratio(tp, n_true) if n_true else _empty(n_pred),
        "pq": sq * rq if tp else (math.nan if n_true + n_pred == 0 else 0.0),
        "sq": sq,
        "rq": rq,
        "aji": aggregated_jaccard(found),
        "objects": n_pred,
        "true_objects": n_true,
        "count_error": n_pred - n_true,
    }


def aggregated_jaccard(found: Overlaps) -> float:
    """The aggregated Jaccard index of `overlaps` (Kumar et al. 2017): NaN with no objects."""
    n_true, n_pred = found.counts
    if n_true + n_pred == 0:
        return math.nan
    unions, intersections = found.unions, found.intersections
    ious = intersections / np.maximum(unions, 1)
    # Each true object's best pair: sort by (true id, IoU) and keep the last of each true id.
    order = np.lexsort((ious, found.true_ids))
    ids = found.true_ids[order]
    best = order[np.r_[ids[1:] != ids[:-1], True]] if order.size else order
    chosen = np.zeros(n_pred + 1, bool)
    chosen[found.pred_ids[best]] = True
    unmatched_true = np.ones(n_true + 1, bool)
    unmatched_true[0] = False
    unmatched_true[found.true_ids[best]] = False
    union = unions[best].sum() + found.true_areas[unmatched_true].sum()
    union += found.pred_areas[1:][~chosen[1:]].sum()
    return float(intersections[best].sum() / union)


def rand_and_info(pred_regions: np.ndarray, true_regions: np.ndarray) -> dict[str, float]:
    """V_Rand and V_Info (with their split and merge parts) of a predicted segmentation against
    a true one, over the pixels the true one labels (its 0 left out), as ISBI 2012 scored."""
    pred = check_labels(pred_regions, "prediction").ravel()
    true = check_labels(true_regions, "target").ravel()
    kept = true > 0
    if not kept.any():
        return dict.fromkeys(
            ("v_rand", "rand_split", "rand_merge", "v_info", "info_split", "info_merge"), math.nan
        )
    _, pred_ids = np.unique(pred[kept], return_inverse=True)
    _, true_ids = np.unique(true[kept], return_inverse=True)
    _, joint = np.unique(
        true_ids.astype(np.int64) * (pred_ids.max() + 1) + pred_ids, return_counts=True
    )
    n = kept.sum()
    p = joint / n
    s = np.bincount(pred_ids) / n  # the prediction's segments
    t = np.bincount(true_ids) / n  # the target's
    sum_p2, sum_s2, sum_t2 = (p**2).sum(), (s**2).sum(), (t**2).sum()
    mutual = (p * np.log(p)).sum() - (s * np.log(s)).sum() - (t * np.log(t)).sum()
    h_pred, h_true = -(s * np.log(s)).sum(), -(t * np.log(t)).sum()
    return {
        "v_rand": float(2 * sum_p2 / (sum_s2 + sum_t2)),
        "rand_split": float(sum_p2 / sum_t2),
        "rand_merge": float(sum_p2 / sum_s2),
        "v_info": float(2 * mutual / (h_pred + h_true)) if h_pred + h_true else 1.0,
        "info_split": float(mutual / h_pred) if h_pred else 1.0,
        "info_merge": float(mutual / h_true) if h_true else 1.0,
    }


def object_table(
    labels: np.ndarray, image: np.ndarray, pixel_area: float | None = None
) -> dict[str, np.ndarray]:
    """Per object of a label image (ids in increasing order): id, area in pixels (and in the
    physical unit squared when `pixel_area` is given), equivalent diameter in pixels, mean
    intensity of the H x W (x C) `image` (channels averaged), centroid row and column.
    Vectorized over objects: ten thousand cost one pass over the pixels."""
    labels = check_labels(labels)
    flat = labels.ravel()
    areas = np.bincount(flat)
    ids = np.flatnonzero(areas[1:]) + 1
    area = areas[ids].astype(np.float64)
    rows, columns = np.indices(labels.shape)
    grey = image.mean(axis=2) if image.ndim == 3 else image

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.bincount(flat, weights=values.ravel(), minlength=len(areas))[ids] / area

    table = {
        "id": ids,
        "area_px": areas[ids],
        "equivalent_diameter_px": np.sqrt(4 * area / np.pi),
        "mean_intensity": mean_of(grey.astype(np.float64)),
        "centroid_row": mean_of(rows),
        "centroid_col": mean_of(columns),
    }
    if pixel_area is not None:
        table["area_physical"] = area * pixel_area
    return table
