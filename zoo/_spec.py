"""What the registry knows about a model (a flat dataclass kept apart from the architecture), and
the inputs its weights expect: channels matched, values normalised."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Builder = Callable[..., nn.Module]
Image = TypeVar("Image", np.ndarray, Tensor)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what its weights expect.

    `builder(num_classes=, in_channels=, pretrained=, **kwargs)` returns an `nn.Module` whose
    output is N x num_classes x H x W for an N x in_channels x H x W input (x D x H x W for a
    volume model, `spatial_dims=3`).
    """

    name: str
    summary: str
    builder: Builder
    family: str = "other"
    min_size: int = 1
    """Smallest height and width the model accepts; any size at or above it works."""
    spatial_dims: int = 2
    """2 for images (N x C x H x W), 3 for volumes (N x C x D x H x W)."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pretrained_sources: tuple[str, ...] = ()
    """Where `pretrained=True` takes weights, e.g. 'torchvision:VGG16_Weights.IMAGENET1K_V1'."""
    default_kwargs: dict[str, object] = field(default_factory=dict)
    origin: str = "runtime"
    """'built-in', 'drop-in <file>', 'entry point <dist> <version>' or 'runtime'."""
    module: str = ""

    def describe(self) -> dict[str, object]:
        """The spec as plain data (no builder), for tables and config files."""
        return {
            "name": self.name,
            "summary": self.summary,
            "family": self.family,
            "origin": self.origin,
            "min_size": self.min_size,
            "spatial_dims": self.spatial_dims,
            "mean": list(self.mean),
            "std": list(self.std),
            "pretrained_sources": list(self.pretrained_sources),
        }


def normalize(image: Tensor, mean: Sequence[float], std: Sequence[float], axis: int = -3) -> Tensor:
    """An image in [0, 1] as the weights expect it, `(image - mean) / std` per channel along
    `axis` (-3: ... x C x H x W; 1: N x C x *spatial, for any spatial axes), as a new tensor; a
    1-channel image uses the averages of `mean` and `std`."""
    channels = image.shape[axis]
    if channels == 1 and len(mean) > 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    if channels != len(mean):
        raise ValueError(
            f"a {channels}-channel image cannot be normalized with {len(mean)} mean values"
        )
    shape = (channels,) + (1,) * (image.ndim - axis % image.ndim - 1)
    return image.sub(torch.tensor(mean, dtype=image.dtype).view(shape)).div_(
        torch.tensor(std, dtype=image.dtype).view(shape)
    )


MAX_SCALE = 1.5  # the most an image is enlarged: beyond, detail is invented and work grows as
# the square (a fine-tune whose new objects are narrower than those its base learned wants > 1)


def check_scale(scale: object, source: str = "scale") -> float:
    """`scale` as a float in (0, MAX_SCALE]: the resolution a model is trained and run at,
    relative to its images'; a ValueError naming `source` otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= MAX_SCALE:
        raise ValueError(
            f"{source}: the scale must be a number in (0, {MAX_SCALE:g}], got {scale!r}"
        )
    return float(scale)


def rescale(image: Tensor, scale: float) -> Tensor:
    """A ... x C x H x W image at `scale` times its height and width (antialiased bilinear; at
    least 1 pixel a side); the image itself when `scale` is 1."""
    if scale == 1:
        return image
    size = [max(1, round(side * scale)) for side in image.shape[-2:]]
    return torch.nn.functional.interpolate(
        image, size=size, mode="bilinear", antialias=True, align_corners=False
    )


def at_size(probabilities: Tensor, size: Sequence[int]) -> Tensor:
    """N x K x h x w probabilities resampled (bilinear) to `size`, unchanged when already so."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return torch.nn.functional.interpolate(
        probabilities, size=list(size), mode="bilinear", align_corners=False
    )


def match_channels(image: Image, channels: int, axis: int = -1) -> Image:
    """An image with `channels` channels along `axis` (-1: an H x W x C array; 1: a tensor
    N x C x *spatial): grey repeated (a tensor's expanded, without a copy), or colour averaged.

    Other mismatches (an RGB image for a 4-channel model) raise a ValueError saying both counts.
    """
    have = image.shape[axis]
    if have == channels:
        return image
    if channels == 1:
        if isinstance(image, Tensor):
            return image.mean(axis, keepdim=True, dtype=torch.float32)
        return image.mean(axis=axis, keepdims=True, dtype=np.float32)
    if have == 1:
        if isinstance(image, Tensor):
            sizes = list(image.shape)
            sizes[axis] = channels
            return image.expand(sizes)
        return np.repeat(image, channels, axis=axis)
    raise ValueError(f"the model takes {channels}-channel images and this one has {have} channels")
