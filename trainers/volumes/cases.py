"""A case made ready for training: read (each channel file, checked to share one grid), brought
to the plan's target spacing and normalized.

    image, label = read_case(case)                             # Volumes, canonical, as stored
    ready = prepare(image, label, target_spacing, intensity)    # tensors at the target spacing
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainers.data.errors import DataError
from trainers.volumes.image import Volume, read_label_volume, read_volume
from trainers.volumes.intensity import Intensity
from trainers.volumes.layouts import Case

SPACING_TOLERANCE = 0.01  # a spacing within 1 % of the target is not resampled


@dataclass(frozen=True)
class Ready:
    """A case at the target spacing: `image` C x D x H x W float32 (normalized), `label` D x H x W
    uint8, and the voxels of each foreground class (N x 3 indices) that patches centre on."""

    id: str
    image: torch.Tensor
    label: torch.Tensor
    foreground: dict[int, torch.Tensor]


def read_case(case: Case) -> tuple[Volume, Volume | None]:
    """The case's image (its channel files stacked, each on the first one's grid) and labels."""
    channels = [read_volume(path) for path in case.images]
    first = channels[0]
    for path, other in zip(case.images[1:], channels[1:], strict=True):
        if differences := other.geometry.differences(first.geometry):
            raise DataError(
                f"{path}: channel does not lie on {case.images[0].name}: " + "; ".join(differences)
            )
    array = np.concatenate([channel.array for channel in channels])
    image = Volume(array, first.spacing, first.geometry, first.modality, case.id)
    label = read_label_volume(case.label, image) if case.label else None
    return image, label


def resample(
    array: torch.Tensor, spacing: Sequence[float], target: Sequence[float], *, labels: bool
) -> torch.Tensor:
    """C x D x H x W (or D x H x W labels) from `spacing` to `target` spacing: trilinear for
    intensities and probabilities, nearest for labels; the array itself when within tolerance."""
    if np.allclose(spacing, target, rtol=SPACING_TOLERANCE, atol=0):
        return array
    shape = [
        max(1, round(n * s / t)) for n, s, t in zip(array.shape[-3:], spacing, target, strict=True)
    ]
    return resized(array, shape, labels=labels)


def resized(array: torch.Tensor, shape: Sequence[int], *, labels: bool) -> torch.Tensor:
    """`array` (C x D x H x W, or D x H x W labels) at spatial `shape`."""
    if tuple(array.shape[-3:]) == tuple(shape):
        return array
    if labels:
        return F.interpolate(array[None, None].float(), size=list(shape), mode="nearest")[0, 0].to(
            array.dtype
        )
    return F.interpolate(
        array[None].float(), size=list(shape), mode="trilinear", align_corners=False
    )[0]


def prepare(
    image: Volume, label: Volume, target_spacing: Sequence[float], intensity: Intensity
) -> Ready:
    """A read case normalized, at the target spacing, with its foreground voxels listed."""
    normalized = torch.from_numpy(intensity.apply(image.array))
    values = torch.from_numpy(label.array.astype(np.uint8))
    normalized = resample(normalized, image.spacing, target_spacing, labels=False)
    values = resample(values, image.spacing, target_spacing, labels=True)
    classes = [int(c) for c in torch.unique(values) if c > 0]
    foreground = {c: torch.nonzero(values == c) for c in classes}
    return Ready(image.name, normalized.contiguous(), values.contiguous(), foreground)
