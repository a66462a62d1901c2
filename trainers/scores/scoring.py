"""One predict-and-score path, for validation, threshold tuning, evaluation and the demo: an
image as read (in [0, 1]) to probabilities on the model's device, tiled when large; probabilities
to a class map by one threshold rule; a class map scored inside the region of interest.

    probabilities = predict_probabilities(model, item["image"], precision="bf16")  # K x H x W
    pred = class_map(probabilities, threshold)       # binary: probability > threshold
    dice, iou = mean_overlap(confusions(pred, item["mask"].numpy(), item["roi"].numpy(), K))

The demo and batch prediction pass their inference engine as `forward`; training and evaluation
use the model itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from torch import Tensor

import zoo
from trainers.fit.steps import autocast
from trainers.scores import metrics

# Larger images are predicted in tiles overlapping by an eighth of their side; of these sizes,
# the one that runs the model over the fewest pixels for the image at hand. An image of at most
# the largest size on each side (at the model's scale) is one pass. Measured on a 2-core CPU:
# `benchmarks/bench_app.py`.
TILES, OVERLAP = (512, 768, 1024), 0.125


def tile_for(height: int, width: int, tiles: tuple[int, ...] = TILES) -> int:
    """The tile side for an image of `height` x `width` at the model's scale: the largest of
    `tiles` when one pass holds it, else the one of `tiles` that runs the fewest pixels."""
    if max(height, width) <= max(tiles):
        return max(tiles)
    return zoo.fewest_pixels_tile(height, width, tiles, OVERLAP)


def predict_probabilities(
    model: zoo.SegmentationModel,
    image: Tensor,
    *,
    forward: Callable[[Tensor], Tensor] | None = None,
    precision: str = "fp32",
    tiles: tuple[int, ...] = TILES,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities K x H x W (float32, on the CPU) of a C x H x W image in [0, 1], of
    the model's channels or any `zoo.match_channels` brings to them.

    Each batch of tiles (at the model's scale) is made the model's input and run by
    `zoo.forward_input`, through `forward` (what `model.predict_normalized` takes: the default,
    on the model's device under `precision`'s autocast; the demo and batch prediction pass
    their inference engine's). Images larger than one pass are predicted in overlapping tiles
    (`tile_for`), `progress(done, total)` told after each."""
    device = next(model.parameters()).device
    x = image[None].to(device, non_blocking=True)
    height, width = (max(1, round(side * model.scale)) for side in x.shape[-2:])
    with autocast(precision, device):
        probabilities = zoo.sliding_window_predict(
            model,
            x,
            tile=tile_for(height, width, tiles),
            overlap=OVERLAP,
            predict=functools.partial(zoo.forward_input, model, forward=forward),
            progress=progress,
        )
    return probabilities[0].float().cpu().numpy()


def checked_threshold(value: object) -> float:
    """`value` as a threshold: a finite number strictly between 0 and 1 (at 0 or 1, `binarize`
    makes every pixel, or none, foreground); a ValueError naming it otherwise."""
    number = value if isinstance(value, float | int) and not isinstance(value, bool) else None
    if number is None or not 0 < number < 1:  # NaN fails the comparison too
        raise ValueError(f"the threshold must be a number between 0 and 1, got {value!r}")
    return float(number)


def binarize(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground where the probability is strictly above `threshold`: the project's one rule
    (the PR curve's thresholds follow it)."""
    return probabilities > threshold


def class_map(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """H x W class ids of K x H x W probabilities: 0/1 by `threshold` for one channel, else the
    most probable class."""
    if probabilities.shape[0] == 1:
        return binarize(probabilities[0], threshold).view(np.uint8)
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
