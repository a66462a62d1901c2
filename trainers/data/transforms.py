"""Joint image / mask / roi transforms on ``torchvision.transforms.v2``.

A transform takes the image (float32 H x W x C in [0, 1], or uint8), the mask (H x W, bool or
integer class ids) and the roi (bool H x W) as numpy arrays and returns tensors: the normalized
image (float32 C x H x W), the mask (int64 H x W) and the roi (bool H x W). Geometric steps move
all three together; masks and roi are resampled with nearest neighbours and padded with 0 /
False, so only their original values ever appear. Colour jitter touches the image only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from zoo import normalize

__all__ = [
    "RandomAffineCrop",
    "RandomGreyInvert",
    "SegmentationTransform",
    "eval_transform",
    "train_transform",
]


class SegmentationTransform:
    """Converts numpy arrays to tv_tensors, applies ``steps`` jointly, then normalizes the image.

    ``mean`` and ``std`` hold one value per channel; a 1-channel image uses their averages.
    Without them (None) the image stays in [0, 1], as `SegmentationModel.predict` takes it.
    """

    def __init__(
        self,
        steps: v2.Transform,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if (mean is None) != (std is None):
            raise ValueError(f"give both mean and std, or neither; got {mean} and {std}")
        if mean is None or std is None:
            self.steps, self.mean, self.std = steps, None, None
            return
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
        """The image may be float32 in [0, 1] or uint8 (0..255, as kept by a data set's cache);
        nothing is copied at full size before the steps, so a crop costs what the crop costs."""
        image_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))  # views, no copies
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        roi_t = tv_tensors.Mask(torch.from_numpy(roi))
        image_t, mask_t, roi_t = self.steps(image_t, mask_t, roi_t)
        image_t = image_t.as_subclass(Tensor)
        if image_t.dtype == torch.uint8:
            image_t = image_t.float().div_(255)  # as the readers scale 8-bit images
        return (
            self.normalize(image_t),
            mask_t.as_subclass(Tensor).long(),
            roi_t.as_subclass(Tensor).bool(),
        )

    def normalize(self, image: Tensor) -> Tensor:
        """A C x H x W image normalized by the transform's mean and std, as a new tensor (the
        image itself without them)."""
        return image if self.mean is None else normalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps!r}, mean={self.mean}, std={self.std})"


class RandomAffineCrop(v2.Transform):
    """A random ``size`` x ``size`` crop of the image rotated by up to ``rotation`` degrees and
    scaled by a factor drawn from ``scale``, at a cost that does not grow with the image.

    The rotation and scale are drawn first; then a window just large enough to hold the final
    crop after them is cut at a random place (padded where it leaves the image), rotated and
    scaled about its centre, and its centre kept. Only that window is resampled, not the image.
    """

    def __init__(self, size: int, *, rotation: float, scale: tuple[float, float]) -> None:
        super().__init__()
        if size < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"need size >= 1 and 0 < scale[0] <= scale[1], got {size}, {scale}")
        self.size, self.rotation, self.scale = size, float(rotation), scale

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        angle = float(torch.empty(1).uniform_(-self.rotation, self.rotation))
        factor = float(torch.empty(1).uniform_(*self.scale))
        radians = math.radians(angle)
        # The final crop's footprint on the source: its side over the scale, rotated.
        window = math.ceil(self.size * (abs(math.cos(radians)) + abs(math.sin(radians))) / factor)
        window = max(window + 2, self.size)  # a pixel of margin each side for interpolation
        top, left = (
            int(torch.randint(min(0, extent - window), max(0, extent - window) + 1, ()))
            for extent in (height, width)
        )
        return {"angle": angle, "scale": factor, "window": window, "top": top, "left": left}

    def transform(self, inpt: Tensor, params: dict) -> Tensor:
        window = params["window"]
        cut = F.crop(inpt, params["top"], params["left"], window, window)  # pads with 0
        turned = F.affine(
            cut,
            angle=params["angle"],
            translate=[0.0, 0.0],
            scale=params["scale"],
            shear=[0.0, 0.0],
            interpolation=v2.InterpolationMode.BILINEAR,  # masks and roi: nearest, always
        )
        return F.center_crop(turned, [self.size, self.size])


class RandomGreyInvert(v2.Transform):
    """With probability ``p``, the image turned grey (each channel the mean of its channels) and
    inverted, so that light objects on a dark ground become dark on a light one and the other
    way round; masks and roi are untouched."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def make_params(self, flat_inputs: list) -> dict:
        return {"apply": bool(torch.rand(()) < self.p)}

    def transform(self, inpt: Tensor, params: dict) -> Tensor:
        if not params["apply"]:
            return inpt
        grey = inpt.float().mean(dim=-3, keepdim=True).expand_as(inpt)
        inverted = (255 - grey).round() if inpt.dtype == torch.uint8 else 1 - grey
        return tv_tensors.wrap(inverted.to(inpt.dtype), like=inpt)


def train_transform(
    size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.75, 1.25),
    rotation: float = 15.0,
    jitter: float = 0.1,
    invert: float = 0.0,
) -> SegmentationTransform:
    """A random ``size`` x ``size`` crop with random scale and rotation (`RandomAffineCrop`),
    then flips and colour jitter on the crop alone.

    Images smaller than ``size`` are padded (image 0, mask 0, roi False). ``jitter`` is the
    brightness, contrast and saturation range; ``invert`` the probability of `RandomGreyInvert`.
    """
    steps = [
        RandomAffineCrop(size, rotation=rotation, scale=scale),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
    ]
    if invert:  # else no draw: the crops of a seed stay those it gave before --invert existed
        steps.append(RandomGreyInvert(invert))
    return SegmentationTransform(v2.Compose(steps), mean=mean, std=std)


def eval_transform(
    *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> SegmentationTransform:
    """The image at full size, in [0, 1] (what `predict` takes), or normalized by `mean` and
    `std` when given."""
    return SegmentationTransform(v2.Identity(), mean=mean, std=std)
