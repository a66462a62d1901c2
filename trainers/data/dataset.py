"""A torch Dataset over ``Sample`` lists: lazy reading, channel matching, random patches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from zoo import match_channels
from zoo._spec import check_scale, rescale

from .fingerprint import light_ground
from .layouts import Sample, read_sample
from .readers import MaskMode, Palette

if TYPE_CHECKING:  # torchvision is imported only where transforms are built
    from .transforms import SegmentationTransform

__all__ = ["SegmentationDataset"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
KEEP_ALL_BYTES = 2 * 2**30
"""How much decoded data a training set may keep in memory (`keep_all`): 2 GiB."""


class SegmentationDataset(Dataset[dict[str, Tensor | str]]):
    """Items ``{"image": float32 C x H x W, "mask": int64 H x W, "roi": bool H x W, "id": str}``.

    The mask holds 0/1 (binary) or class ids (labels); the roi is all True where a sample has none
    (the transform pads it with False). Images are converted to ``in_channels`` (grey repeated to
    RGB, RGB averaged to grey). With ``patches_per_image`` > 1 every sample appears that many
    times, each index a fresh random crop (`balance_grounds` repeats the rarer ground's). Files
    are read on first use; the last ``cache_size`` decoded samples are kept, and `keep_all` keeps
    every sample decoded for the whole run. With a ``scale`` other than 1 each sample is resized
    by it as it is read (the image antialiased, mask and roi by nearest neighbour), for models
    trained at another resolution.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: SegmentationTransform,
        *,
        in_channels: int = 3,
        mask_mode: MaskMode = "binary",
        palette: Palette | None = None,
        patches_per_image: int = 1,
        cache_size: int = 8,
        scale: float = 1.0,
    ):
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if mask_mode not in ("binary", "labels", "objects"):
            raise ValueError(
                f"mask_mode must be 'binary', 'labels' or 'objects', got {mask_mode!r}"
            )
        if patches_per_image < 1 or cache_size < 0:
            raise ValueError(
                f"patches_per_image must be >= 1 and cache_size >= 0, "
                f"got {patches_per_image} and {cache_size}"
            )
        self.samples = list(samples)
        self.transform = transform
        self.in_channels = in_channels
        self.mask_mode = mask_mode
        self.palette = palette
        self.patches_per_image = patches_per_image
        self.cache_size = cache_size
        self.scale = check_scale(scale)
        self._cache: OrderedDict[int, Arrays] = OrderedDict()
        self._kept: dict[int, Arrays] = {}
        self._positions = np.repeat(np.arange(len(self.samples)), patches_per_image)

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        position = int(self._positions[index])
        image, mask, roi = self.transform(*self._arrays(position))
        return {"image": image, "mask": mask, "roi": roi, "id": self.samples[position].id}

    def keep_all(self, budget_bytes: int = KEEP_ALL_BYTES) -> bool:
        """Decode every sample now and keep it, 8-bit images as uint8 (a quarter of float32),
        if the whole set fits in `budget_bytes`; False (and nothing kept) if it does not.

        Called before a DataLoader starts its workers, each worker inherits the decoded set
        (forked, the pages are shared): every image is decoded once per run, not once per crop.
        """
        kept: dict[int, Arrays] = {}
        total = 0
        for position in range(len(self.samples)):
            arrays = self._arrays(position)
            kept[position] = arrays = (_compact(arrays[0]), _compact_labels(arrays[1]), arrays[2])
            total += sum(array.nbytes for array in arrays)
            if total > budget_bytes:
                return False
        self._kept = kept
        self._cache.clear()
        return True

    def balance_grounds(self) -> tuple[int, int]:
        """Repeat each image of the rarer ground (light or dark, as `light_ground` tells) so that
        the two grounds give about as many crops a pass; the (light, dark) image counts. With a
        single ground nothing changes."""
        light = np.array(
            [
                light_ground(image[roi])
                for image, _, roi in map(self._arrays, range(len(self.samples)))
            ]
        )
        counts = int(light.sum()), int((~light).sum())
        if min(counts):
            rarer = light if counts[0] < counts[1] else ~light
            repeats = np.where(rarer, round(max(counts) / min(counts)), 1)
            self._positions = np.repeat(
                np.arange(len(self.samples)), repeats * self.patches_per_image
            )
        return counts

    def _arrays(self, position: int) -> Arrays:
        if position in self._kept:
            return self._kept[position]
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        image, mask, roi = read_sample(
            self.samples[position], mask_mode=self.mask_mode, palette=self.palette
        )
        arrays = _rescaled(match_channels(image, self.in_channels), mask, roi, self.scale)
        if self.cache_size:
            self._cache[position] = arrays
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return arrays


def _rescaled(image: np.ndarray, mask: np.ndarray, roi: np.ndarray, scale: float) -> Arrays:
    """A sample at `scale` times its resolution: the image antialiased, the mask and roi by
    nearest neighbour (labels stay labels); unchanged at scale 1."""
    if scale == 1:
        return image, mask, roi
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    small = rescale(pixels[None], scale)[0].permute(1, 2, 0).numpy()
    rows, columns = (
        np.minimum(((np.arange(new) + 0.5) / scale).astype(int), old - 1)
        for new, old in zip(small.shape[:2], image.shape[:2], strict=True)
    )
    return np.ascontiguousarray(small), mask[rows][:, columns], roi[rows][:, columns]


def _compact(image: np.ndarray) -> np.ndarray:
    """An image read from 8 bits (every value k / 255) as uint8 k; any other unchanged."""
    if image.dtype != np.float32:
        return image
    levels = np.rint(image * 255).astype(np.uint8)
    return levels if np.array_equal(levels.astype(np.float32) / 255.0, image) else image


def _compact_labels(mask: np.ndarray) -> np.ndarray:
    """Class ids below 256 as uint8 (an eighth of int64); a bool mask unchanged."""
    if mask.dtype == np.int64 and mask.size and mask.min() >= 0 and mask.max() < 256:
        return mask.astype(np.uint8)
    return mask
