"""Joint image / mask / roi transforms on ``torchvision.transforms.v2``.

A transform takes the image (float32 H x W x C in [0, 1]), the mask (H x W, bool or integer class
ids) and the roi (bool H x W) as numpy arrays and returns tensors: the normalized image
(float32 C x H x W), the mask (int64 H x W) and the roi (bool H x W). Geometric steps move all
three together; masks and roi are resampled with nearest neighbours and padded with 0 / False, so
only their original values ever appear. Colour jitter touches the image only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from zoo import normalize

__all__ = ["SegmentationTransform", "eval_transform", "train_transform"]


class SegmentationTransform:
    """Converts numpy arrays to tv_tensors, applies ``steps`` jointly, then normalizes the image.

    ``mean`` and ``std`` hold one value per channel; a 1-channel image uses their averages.
    """

    def __init__(self, steps: v2.Transform, *, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.steps = steps
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray
    ) -> tuple[Tensor, Tensor, Tensor]:
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        roi_t = tv_tensors.Mask(torch.from_numpy(roi.astype(bool)))
        image_t, mask_t, roi_t = self.steps(image_t, mask_t, roi_t)
        return (
            self.normalize(image_t.as_subclass(Tensor)),
            mask_t.as_subclass(Tensor),
            roi_t.as_subclass(Tensor),
        )

    def normalize(self, image: Tensor) -> Tensor:
        """A C x H x W image normalized by the transform's mean and std, as a new tensor."""
        return normalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps!r}, mean={self.mean}, std={self.std})"


def train_transform(
    size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.75, 1.25),
    rotation: float = 15.0,
    jitter: float = 0.1,
) -> SegmentationTransform:
    """Random scale and rotation, flips, colour jitter, then a random ``size`` x ``size`` crop.

    Images smaller than ``size`` are padded (image 0, mask 0, roi False). ``jitter`` is the
    brightness, contrast and saturation range.
    """
    steps = v2.Compose(
        [
            v2.RandomAffine(
                degrees=rotation, scale=scale, interpolation=v2.InterpolationMode.BILINEAR
            ),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            v2.RandomCrop(size, pad_if_needed=True),
        ]
    )
    return SegmentationTransform(steps, mean=mean, std=std)


def eval_transform(*, mean: Sequence[float], std: Sequence[float]) -> SegmentationTransform:
    """Normalization only, at full size."""
    return SegmentationTransform(v2.Identity(), mean=mean, std=std)
