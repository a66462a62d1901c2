"""Prediction on images of any size: tiled sliding-window inference with overlap blending."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._model import SegmentationModel
from ._spec import at_size, rescale


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Evenly spaced tile origins covering [0, length), no further apart than `stride`."""
    if length <= tile:
        return [0]
    count = -(-(length - tile) // stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def fewest_pixels_tile(height: int, width: int, sizes: Sequence[int], overlap: float) -> int:
    """Of the tile `sizes`, the one whose tiling of a `height` x `width` image runs the model
    over the fewest pixels (tiles times tile area; the smaller size on a tie)."""

    def processed(tile: int) -> int:
        stride = max(int(tile * (1 - overlap)), 1)
        rows, columns = _starts(height, tile, stride), _starts(width, tile, stride)
        return len(rows) * len(columns) * min(tile, height) * min(tile, width)

    return min(sorted(sizes), key=processed)


def _gaussian(length: int, device: torch.device) -> Tensor:
    """Weights along one side of a tile, peaking at the centre (sigma = length / 8, floored)."""
    axis = torch.arange(length, device=device, dtype=torch.float32) - (length - 1) / 2
    return torch.exp(-0.5 * (axis / (length / 8)) ** 2).clamp_min(1e-3)


@torch.inference_mode()
def sliding_window_predict(
    model: SegmentationModel,
    image: Tensor,
    *,
    tile: int | Sequence[int] = 512,
    overlap: float = 0.25,
    batch_size: int = 1,
    predict: Callable[[Tensor], Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Class probabilities (1 x K x H x W) of a normalized 1 x C x H x W image, tile by tile; a
    volume model's (1 x K x D x H x W) of a 1 x C x D x H x W volume alike, `tile` one side or
    one per axis (a patch).

    Tiles of `tile` pixels overlap by `overlap` of their side and are blended with a Gaussian
    weight, so seams do not show. Memory stays bounded: the output (no full-size weight sum),
    plus one batch of `batch_size` tiles. An image no larger than one tile is predicted in one
    pass. `predict` maps a batch to probabilities (default `model.predict_normalized`; an engine's,
    from `zoo.engine_predict`, for speed). `progress(done, total)` is called after each batch.
    A model with a `scale` other than 1 is run on the image resized by it (tiles of `tile` pixels at
    that resolution), and the answer is resized back to the image's size.
    """
    dims = model.spec.spatial_dims
    if image.ndim != 2 + dims or image.shape[0] != 1:
        axes = " x ".join("DHW"[-dims:])
        raise ValueError(f"expected one input of shape 1 x C x {axes}, got {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    model.eval()
    scaled = rescale(image, model.scale)
    predict = predict or model.predict_normalized
    sides = (tile,) * dims if isinstance(tile, int) else tuple(tile)
    patch = tuple(max(side, model.spec.min_size) for side in sides)
    probabilities = _tiled(model.num_classes, scaled, patch, overlap, batch_size, predict, progress)
    return at_size(probabilities, image.shape[-2:])


def _tiled(
    num_classes: int,
    image: Tensor,
    patch: tuple[int, ...],
    overlap: float,
    batch_size: int,
    predict: Callable[[Tensor], Tensor],
    progress: Callable[[int, int], None] | None,
) -> Tensor:
    spatial = image.shape[2:]
    if all(side <= tile for side, tile in zip(spatial, patch, strict=True)):
        if progress:
            progress(1, 1)
        return predict(image)
    starts = [
        _starts(side, tile, max(int(tile * (1 - overlap)), 1))
        for side, tile in zip(spatial, patch, strict=True)
    ]
    size = [min(tile, side) for side, tile in zip(spatial, patch, strict=True)]
    weights = [_gaussian(length, image.device) for length in size]
    weight = functools.reduce(_outer, weights)
    boxes = list(itertools.product(*starts))
    out = torch.zeros(1, num_classes, *spatial, device=image.device)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        tiles = torch.cat([image[(..., *_window(box, size))] for box in chunk])
        probabilities = predict(tiles)
        for box, p in zip(chunk, probabilities, strict=True):
            out[(0, ..., *_window(box, size))].addcmul_(p, weight)
        if progress:
            progress(min(first + batch_size, len(boxes)), len(boxes))
    # The tiles' weights summed at each pixel: the grid is a product of one weight placed along
    # each axis, so the sum is the outer product of the sums along the axes (no full-size array
    # to add into).
    sums = map(_summed, weights, starts, spatial)
    return out.div_(functools.reduce(_outer, sums))


def _outer(a: Tensor, b: Tensor) -> Tensor:
    """The outer product of a tensor and a vector: shape (*a.shape, len(b))."""
    return a[..., None] * b


def _window(start: tuple[int, ...], size: list[int]) -> tuple[slice, ...]:
    return tuple(slice(first, first + length) for first, length in zip(start, size, strict=True))


def _summed(weights: Tensor, starts: list[int], length: int) -> Tensor:
    """Along one side of the image: the sum of the tiles' `weights` placed at `starts`."""
    total = torch.zeros(length, device=weights.device)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total
