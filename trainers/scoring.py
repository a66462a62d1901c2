"""One predict-and-score path, for validation, threshold tuning and evaluation: an image as read
(in [0, 1]) to probabilities on the model's device, tiled when large; probabilities to a class
map by one threshold rule; a class map scored inside the region of interest.

    probabilities = predict_probabilities(model, item["image"], precision="bf16")  # K x H x W
    pred = class_map(probabilities, threshold)       # binary: probability > threshold
    dice, iou = mean_overlap(confusions(pred, item["mask"].numpy(), item["roi"].numpy(), K))
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

import zoo
from trainers import metrics
from trainers.steps import autocast

TILE = 1024  # images larger than this on a side (at the model's scale) are predicted in tiles
OVERLAP = 0.125


def predict_probabilities(
    model: zoo.SegmentationModel, image: Tensor, *, precision: str = "fp32", tile: int = TILE
) -> np.ndarray:
    """Class probabilities K x H x W (float32, on the CPU) of a C x H x W image in [0, 1], run on
    the model's device under `precision`'s autocast; tiled as the demo tiles above `tile`."""
    device = next(model.parameters()).device
    x = image[None].to(device, non_blocking=True)
    side = max(x.shape[-2:]) * model.scale
    with autocast(precision, device):
        if side <= tile:
            probabilities = model.predict(x)
        else:
            probabilities = zoo.sliding_window_predict(
                model, x, tile=tile, overlap=OVERLAP, predict=lambda t: _normalized(model, t)
            )
    return probabilities[0].float().cpu().numpy()


def _normalized(model: zoo.SegmentationModel, tiles: Tensor) -> Tensor:
    return model.predict_normalized(zoo.normalize(tiles, model.spec.mean, model.spec.std))


def binarize(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground where the probability is strictly above `threshold`: the project's one rule
    (the PR curve's thresholds follow it)."""
    return probabilities > threshold


def class_map(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """H x W class ids of K x H x W probabilities: 0/1 by `threshold` for one channel, else the
    most probable class."""
    if probabilities.shape[0] == 1:
        return binarize(probabilities[0], threshold).astype(np.int64)
    return probabilities.argmax(0)


def confusions(
    pred: np.ndarray, target: np.ndarray, roi: np.ndarray, num_classes: int
) -> list[metrics.Confusion]:
    """Per foreground class (one for a binary model), the confusion counts inside `roi`."""
    classes = range(1, 2) if num_classes == 1 else range(1, num_classes)
    return [metrics.confusion(pred == c, target == c, roi) for c in classes]


def mean_overlap(found: list[metrics.Confusion]) -> tuple[float, float]:
    """Mean Dice and IoU over the classes present in the prediction or the target; a class
    absent from both is left out (as nnU-Net leaves it out), NaN when every class is."""
    present = [cm for cm in found if cm.tp + cm.fp + cm.fn > 0]
    if not present:
        return math.nan, math.nan
    return (
        float(np.mean([metrics.dice(cm) for cm in present])),
        float(np.mean([metrics.iou(cm) for cm in present])),
    )
