"""A volume model run over a whole volume: normalized as it was trained, brought to its training
spacing, predicted by 3D sliding windows with Gaussian blending, and answered as labels on the
volume's own grid.

    model = zoo.from_pretrained("runs/hippocampus")          # its config says how (`VolumeRecipe`)
    labels = predict_volume(model, read_volume("case.nii.gz"))   # D x H x W uint8, canonical

Memory stays bounded by the volume: the input, the probabilities at the training spacing, and
one class at a time when they are resampled back (a running arg-max, never all classes at the
input's size at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import zoo
from trainers.fit.steps import autocast
from trainers.volumes.cases import resample, resized
from trainers.volumes.image import Volume
from trainers.volumes.intensity import Intensity

OVERLAP = 0.5  # of a patch's side, between neighbouring windows (nnU-Net's)
WINDOWS = 4  # patches run as one batch


@dataclass(frozen=True)
class VolumeRecipe:
    """What a volume model needs to run on a new volume, saved in its config.json ("volume")."""

    target_spacing: tuple[float, float, float]
    patch: tuple[int, int, int]
    intensity: Intensity
    modality: str
    channel_names: tuple[str, ...]

    def to_config(self) -> dict[str, Any]:
        return {
            "spatial_dims": 3,
            "target_spacing": list(self.target_spacing),
            "patch": list(self.patch),
            "normalization": self.intensity.to_config(),
            "modality": self.modality,
            "channel_names": list(self.channel_names),
        }

    @classmethod
    def of(cls, model: zoo.SegmentationModel) -> VolumeRecipe:
        """The recipe in a loaded model's config; a ValueError for a 2D model."""
        config = model.pretrained_config.get("volume")
        if model.spec.spatial_dims != 3 or not isinstance(config, dict):
            raise ValueError(
                f"model '{model.spec.name}' is not a volume model (no 'volume' in its config)"
            )
        return cls(
            tuple(config["target_spacing"]),
            tuple(config["patch"]),
            Intensity.from_config(config["normalization"]),
            str(config.get("modality", "")),
            tuple(config.get("channel_names", ())),
        )


@torch.inference_mode()
def predict_volume(
    model: zoo.SegmentationModel,
    volume: Volume,
    recipe: VolumeRecipe | None = None,
    *,
    precision: str = "fp32",
) -> np.ndarray:
    """Labels (D x H x W uint8, canonical, on `volume`'s grid) of the model's arg-max class."""
    recipe = recipe or VolumeRecipe.of(model)
    image = torch.from_numpy(recipe.intensity.apply(volume.array))
    image = resample(image, volume.spacing, recipe.target_spacing, labels=False)
    probabilities = probabilities_of(model, image, recipe.patch, precision)
    del image
    if tuple(probabilities.shape[1:]) == volume.shape:
        return probabilities.argmax(0).numpy().astype(np.uint8)
    return _argmax_at(probabilities, volume.shape)


@torch.inference_mode()
def probabilities_of(
    model: zoo.SegmentationModel, image: torch.Tensor, patch: tuple[int, ...], precision: str
) -> torch.Tensor:
    """K x D x H x W class probabilities (on the CPU) of a normalized C x D x H x W volume at the
    model's spacing, by sliding windows of `patch` on the model's device, under autocast."""
    device = next(model.parameters()).device

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model.predict_normalized(batch).float()

    windows = zoo.sliding_window_predict(
        model,
        image[None].to(device),
        tile=patch,
        overlap=OVERLAP,
        batch_size=WINDOWS,
        predict=forward,
    )
    return windows[0].cpu()


def _argmax_at(probabilities: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """The arg-max class of K x d x h x w probabilities resampled to `shape`, a class at a time."""
    best = torch.full(shape, -1.0)
    labels = torch.zeros(shape, dtype=torch.uint8)
    for index, channel in enumerate(probabilities):
        at_shape = resized(channel[None], shape, labels=False)[0]
        higher = at_shape > best
        best = torch.where(higher, at_shape, best)
        labels[higher] = index
        del at_shape, higher
    return labels.numpy()
