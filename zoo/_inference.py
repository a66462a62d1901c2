"""Prediction on images of any size: tiled sliding-window inference with overlap blending."""

from __future__ import annotations

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
    tile: int = 512,
    overlap: float = 0.25,
    batch_size: int = 1,
    predict: Callable[[Tensor], Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Class probabilities (1 x K x H x W) of a normalized 1 x C x H x W image, tile by tile.

    Tiles of `tile` pixels overlap by `overlap` of their side and are blended with a Gaussian
    weight, so seams do not show. Memory stays bounded: the output (no full-size weight sum),
    plus one batch of `batch_size` tiles. An image no larger than one tile is predicted in one
    pass. `predict` maps a batch to probabilities (default `model.predict_normalized`; an engine's,
    from `zoo.engine_predict`, for speed). `progress(done, total)` is called after each batch.
    A model with a `scale` below 1 is run on the image resized by it (tiles of `tile` pixels at
    that resolution), and the answer is resized back to the image's size.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape 1 x C x H x W, got {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    model.eval()
    scaled = rescale(image, model.scale)
    predict = predict or model.predict_normalized
    probabilities = _tiled(model, scaled, tile, overlap, batch_size, predict, progress)
    return at_size(probabilities, image.shape[-2:])


def _tiled(
    model: SegmentationModel,
    image: Tensor,
    tile: int,
    overlap: float,
    batch_size: int,
    predict: Callable[[Tensor], Tensor],
    progress: Callable[[int, int], None] | None,
) -> Tensor:
    _, _, height, width = image.shape
    if height <= tile and width <= tile:
        if progress:
            progress(1, 1)
        return predict(image)
    tile = max(tile, model.spec.min_size)
    stride = max(int(tile * (1 - overlap)), 1)
    rows, columns = _starts(height, tile, stride), _starts(width, tile, stride)
    h, w = min(tile, height), min(tile, width)
    weight_y, weight_x = _gaussian(h, image.device), _gaussian(w, image.device)
    weight = weight_y[:, None] * weight_x  # every tile has this shape and weight
    boxes = [(y, x) for y in rows for x in columns]
    out = torch.zeros(1, model.num_classes, height, width, device=image.device)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        tiles = torch.cat([image[..., y : y + h, x : x + w] for y, x in chunk])
        probabilities = predict(tiles)
        for (y, x), p in zip(chunk, probabilities, strict=True):
            out[..., y : y + h, x : x + w].addcmul_(p, weight)
        if progress:
            progress(min(first + batch_size, len(boxes)), len(boxes))
    # The tiles' weights summed at each pixel: the grid is rows x columns of one weight, so the
    # sum is the outer product of two sums along the sides (no full-size array to add into).
    return out.div_(_summed(weight_y, rows, height)[:, None] * _summed(weight_x, columns, width))


def _summed(weights: Tensor, starts: list[int], length: int) -> Tensor:
    """Along one side of the image: the sum of the tiles' `weights` placed at `starts`."""
    total = torch.zeros(length, device=weights.device)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total
