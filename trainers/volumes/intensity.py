"""Intensities as the field normalizes them (nnU-Net's rules), one scheme per channel:

- CT: Hounsfield units clipped to the 0.5 and 99.5 percentiles of the training set's foreground
  voxels and z-scored with that foreground's mean and std (the same numbers for every volume,
  since HU mean the same everywhere);
- anything else (MRI, ...): each volume z-scored by its own mean and std (MRI intensities have
  no fixed scale).

    intensity = Intensity.fit(images, labels, modalities=("CT",))   # training cases
    normalized = intensity.apply(volume.array)                        # C x D x H x W, float32
    config = intensity.to_config()                                    # saved with the weights
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAMPLES_PER_CASE = 10_000  # foreground voxels drawn from each training case for the CT statistics


@dataclass(frozen=True)
class ChannelScheme:
    """How one channel is normalized: "ct" with its clip range, mean and std, or "zscore"."""

    scheme: str
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    def apply(self, channel: np.ndarray) -> np.ndarray:
        if self.scheme == "ct":
            clipped = np.clip(channel, self.low, self.high)
            return ((clipped - self.mean) / max(self.std, 1e-8)).astype(np.float32)
        return ((channel - channel.mean()) / max(float(channel.std()), 1e-8)).astype(np.float32)

    def describe(self) -> str:
        if self.scheme == "ct":
            return (
                f"CT: clipped to [{self.low:.0f}, {self.high:.0f}] HU (foreground 0.5-99.5 "
                f"percentiles), z-scored with mean {self.mean:.1f}, std {self.std:.1f}"
            )
        return "z-scored per volume"


@dataclass(frozen=True)
class Intensity:
    """The schemes of a model's input channels, in order."""

    channels: tuple[ChannelScheme, ...]

    @classmethod
    def fit(
        cls,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        modalities: Sequence[str],
        seed: int = 0,
    ) -> Intensity:
        """The schemes for `modalities` (one per channel), with CT's statistics from the
        foreground voxels of `images` (C x D x H x W) where `labels` (D x H x W) are above 0."""
        rng = np.random.default_rng(seed)
        schemes = []
        for index, modality in enumerate(modalities):
            if modality.upper() != "CT":
                schemes.append(ChannelScheme("zscore"))
                continue
            drawn = []
            for image, label in zip(images, labels, strict=True):
                values = image[index][label > 0]
                if values.size:
                    drawn.append(
                        rng.choice(values, min(values.size, SAMPLES_PER_CASE), replace=False)
                    )
            pooled = (
                np.concatenate(drawn)
                if drawn
                else np.concatenate([i[index].ravel() for i in images])
            )
            low, high = np.percentile(pooled, [0.5, 99.5])
            clipped = np.clip(pooled, low, high)
            schemes.append(
                ChannelScheme(
                    "ct", float(low), float(high), float(clipped.mean()), float(clipped.std())
                )
            )
        return cls(tuple(schemes))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """A C x D x H x W volume normalized channel by channel, as float32."""
        if array.shape[0] != len(self.channels):
            raise ValueError(
                f"a volume of {array.shape[0]} channels for a model of {len(self.channels)}"
            )
        return np.stack(
            [scheme.apply(channel) for scheme, channel in zip(self.channels, array, strict=True)]
        )

    def describe(self) -> str:
        return "; ".join(f"channel {i}: {s.describe()}" for i, s in enumerate(self.channels))

    def to_config(self) -> list[dict[str, float | str]]:
        return [vars(scheme).copy() for scheme in self.channels]

    @classmethod
    def from_config(cls, config: Sequence[dict]) -> Intensity:
        return cls(tuple(ChannelScheme(**scheme) for scheme in config))
