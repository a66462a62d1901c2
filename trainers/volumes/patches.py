"""Training batches of 3D patches: a third centred on a foreground voxel (nnU-Net's
oversampling, so small structures are seen), the rest anywhere, then augmented as the voxel
spacing allows.

    sampler = PatchSampler(cases, patch=(40, 56, 40), batch=2, in_plane=(1, 2), seed=0)
    images, labels = sampler.batch()    # B x C x D x H x W float32, B x D x H x W int64

Augmentation (each with nnU-Net's probabilities): rotation and scaling in the plane of the two
finest axes only (rotating across a coarse slice axis would invent detail), mirroring on every
axis, and intensity: brightness, contrast and Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainers.volumes.cases import Ready

FOREGROUND_SHARE = 1 / 3
SPATIAL_P, ROTATION_DEGREES, SCALE_RANGE = 0.2, 30.0, (0.7, 1.4)
BRIGHTNESS_P, CONTRAST_P, NOISE_P = 0.15, 0.15, 0.1


class PatchSampler:
    """Random training patches from `cases`, reproducible from `seed`."""

    def __init__(
        self,
        cases: Sequence[Ready],
        patch: Sequence[int],
        batch: int,
        in_plane: tuple[int, int],
        seed: int = 0,
    ) -> None:
        self.cases, self.patch, self.size, self.in_plane = (
            list(cases),
            tuple(patch),
            batch,
            in_plane,
        )
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * torch.rand((), generator=self.generator).item()

    def _index(self, count: int) -> int:
        return int(torch.randint(count, (), generator=self.generator))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for slot in range(self.size):
            case = self.cases[self._index(len(self.cases))]
            # the last of each batch (at least a third) centres on foreground, as nnU-Net does
            centre_on_foreground = slot >= round(self.size * (1 - FOREGROUND_SHARE))
            image, label = self._crop(case, centre_on_foreground)
            image, label = self._spatial(image, label)
            images.append(self._intensity(image))
            labels.append(label)
        return torch.stack(images), torch.stack(labels).long()

    def _crop(self, case: Ready, centre_on_foreground: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A patch of the case (zero-padded where the case is smaller than the patch)."""
        shape = case.label.shape
        if centre_on_foreground and case.foreground:
            classes = sorted(case.foreground)
            voxels = case.foreground[classes[self._index(len(classes))]]
            centre = voxels[self._index(len(voxels))].tolist()
            starts = [c - p // 2 for c, p in zip(centre, self.patch, strict=True)]
        else:
            starts = [
                self._index(max(n - p, 0) + 1) for n, p in zip(shape, self.patch, strict=True)
            ]
        starts = [
            min(max(s, 0), n - p) if n >= p else -((p - n) // 2)  # smaller: padded, centred
            for s, n, p in zip(starts, shape, self.patch, strict=True)
        ]
        return _window(case.image, starts, self.patch), _window(case.label, starts, self.patch)

    def _spatial(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._uniform() < SPATIAL_P:
            image, label = self._rotate_and_scale(image, label)
        for axis in range(3):
            if self._uniform() < 0.5:
                image, label = image.flip(axis + 1), label.flip(axis)
        return image, label

    def _rotate_and_scale(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        angle = math.radians(self._uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
        scale = self._uniform(*SCALE_RANGE)
        theta = torch.eye(3, 4)
        # affine_grid's coordinates run x, y, z = W, H, D: axis a of D, H, W is coordinate 2 - a
        a, b = (2 - axis for axis in self.in_plane)
        theta[a, a], theta[a, b] = math.cos(angle) / scale, -math.sin(angle) / scale
        theta[b, a], theta[b, b] = math.sin(angle) / scale, math.cos(angle) / scale
        grid = F.affine_grid(theta[None], [1, 1, *image.shape[1:]], align_corners=False)
        moved = F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]
        moved_label = F.grid_sample(
            label[None, None].float(), grid, mode="nearest", align_corners=False
        )
        return moved, moved_label[0, 0].to(label.dtype)

    def _intensity(self, image: torch.Tensor) -> torch.Tensor:
        if self._uniform() < BRIGHTNESS_P:
            image = image * self._uniform(0.75, 1.25)
        if self._uniform() < CONTRAST_P:
            mean = image.mean()
            image = (image - mean) * self._uniform(0.75, 1.25) + mean
        if self._uniform() < NOISE_P:
            noise = torch.randn(image.shape, generator=self.generator)
            image = image + noise * math.sqrt(self._uniform(0.0, 0.1))
        return image


def _window(array: torch.Tensor, starts: Sequence[int], patch: Sequence[int]) -> torch.Tensor:
    """array[..., s:s+p] on the last three axes, zero where the window leaves the array."""
    shape = array.shape[-3:]
    inside = [slice(max(s, 0), min(s + p, n)) for s, p, n in zip(starts, patch, shape, strict=True)]
    out = array.new_zeros((*array.shape[:-3], *patch))
    placed = [slice(i.start - s, i.stop - s) for i, s in zip(inside, starts, strict=True)]
    out[(..., *placed)] = array[(..., *inside)]
    return out
