"""The plan for a data set of volumes, from its fingerprint and this machine's timed steps, as
nnU-Net plans from a data set's fingerprint; printed with its reasons and kept as plan.json.

- **Spacing**: the training cases' median spacing per axis is the target every case (and every
  volume predicted later) is resampled to.
- **2D or 3D**: 3D (`unet3d`) where the target spacing's anisotropy (coarsest over finest axis)
  is below `ANISOTROPY`; above it the slices are too far apart for isotropic 3x3x3 kernels to see
  alike along every axis, and the plan says so (2D on slices is not built yet: it still trains
  in 3D).
- **Patch**: the median case's shape at the target spacing, each side rounded up to the network's
  stride, shrunk along its longest side (in mm) until it holds at most `MAX_PATCH_VOXELS` (more
  on a GPU); at most `MAX_DEPTH` down-steps, each side at least 4 voxels at the bottom.
- **Width, precision, steps**: each width in `WIDTHS` is timed (bf16 where the machine has it and
  it is faster); the widest that trains `MIN_STEPS` steps in the training share wins, and the
  steps fill the share (`plan_rules.TRAINING_SHARE` of the time allowed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.fit.plan_rules import ALLOWANCE, TRAINING_SHARE, VALIDATIONS, Hardware

ANISOTROPY = 3.0
MAX_PATCH_VOXELS = {"cpu": 64 * 96 * 96, "gpu": 128 * 128 * 128}
MAX_DEPTH = 4
WIDTHS = (16, 32, 64)
MIN_STEPS = 2000  # the fewest steps a width must train in the share to be chosen
BATCH = 2  # nnU-Net's for 3D: patches are large, and instance norm does not need a batch
LEARNING_RATE = 3e-3
WARMUP = 50

StepTimer = Callable[[str, dict[str, Any], tuple[int, int, int], str], float]
"""Seconds per training step of (model, model kwargs, patch, precision)."""


@dataclass(frozen=True)
class VolumeFingerprint:
    """What the plan reads from the training cases: their spacings and shapes (canonical D, H,
    W), the modality, the channels and classes."""

    spacings: tuple[tuple[float, float, float], ...]
    shapes: tuple[tuple[int, int, int], ...]
    modality: str
    channels: int
    classes: int

    @property
    def target_spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.median(np.asarray(self.spacings), axis=0))

    @property
    def median_shape(self) -> tuple[int, int, int]:
        """The median case's shape once at the target spacing."""
        physical = np.asarray(self.shapes) * np.asarray(self.spacings)
        return tuple(round(float(v)) for v in np.median(physical, axis=0) / self.target_spacing)

    def describe(self) -> str:
        spacing = " x ".join(f"{v:.2f}" for v in self.target_spacing)
        shape = "x".join(map(str, self.median_shape))
        return (
            f"{len(self.shapes)} training cases, modality {self.modality or 'unknown'}, "
            f"{self.channels} channel(s), {self.classes} classes; median spacing {spacing} mm, "
            f"median shape {shape} (D x H x W)"
        )


def in_plane_axes(spacing: Sequence[float]) -> tuple[int, int]:
    """The two axes of finest spacing (the plane rotations and 2D slices lie in); on a tie the
    later axes (H and W: an axial plane, as scanners store slices)."""
    first, second = sorted(sorted(range(3), key=lambda axis: (spacing[axis], -axis))[:2])
    return first, second


def patch_for(f: VolumeFingerprint, hardware: Hardware) -> tuple[tuple[int, int, int], int]:
    """The patch (D, H, W) and the network's depth (down-steps) for the data set."""
    limit = MAX_PATCH_VOXELS["gpu" if hardware.gpu else "cpu"]
    sides = list(f.median_shape)
    depth = max(1, min(MAX_DEPTH, int(math.log2(max(min(sides), 8) / 4))))
    stride = 2**depth
    patch = [max(stride, -(-side // stride) * stride) for side in sides]
    while math.prod(patch) > limit:
        longest = max(range(3), key=lambda a: patch[a] * f.target_spacing[a])
        patch[longest] = max(stride, patch[longest] - stride)
    return tuple(patch), depth


def make_volume_plan(
    f: VolumeFingerprint,
    hardware: Hardware,
    timer: StepTimer,
    *,
    allowance: float = ALLOWANCE,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's settings with `reasons` (a list of lines); `fixed` are the user's flags (steps,
    model_kwargs), which the plan keeps."""
    fixed = fixed or {}
    reasons = [f"fingerprint: {f.describe()}", f"machine: {hardware.describe()}"]
    anisotropy = max(f.target_spacing) / min(f.target_spacing)
    if anisotropy < ANISOTROPY:
        reasons.append(f"3D: the target spacing's anisotropy is {anisotropy:.1f} (< {ANISOTROPY})")
    else:
        reasons.append(
            f"3D, though the anisotropy is {anisotropy:.1f} (>= {ANISOTROPY}, where nnU-Net would "
            "also try 2D on slices; bioseg's 2D-on-slices training is not built yet)"
        )
    patch, depth = patch_for(f, hardware)
    reasons.append(f"patch {'x'.join(map(str, patch))} (the median case, stride {2**depth})")
    share = allowance * TRAINING_SHARE
    model = fixed.get("model") or "unet3d"
    if model == "unet3d":
        choices = [{"base_channels": width, "depth": depth} for width in WIDTHS]
    else:  # another volume plugin: its own options, timed once
        choices = [{}]
        reasons.append(f"model {model} (--model): its own options, timed as they are")
    timed = []
    for choice in choices:
        kwargs = {**choice, **fixed.get("model_kwargs", {})}
        width = kwargs.get("base_channels", "default")
        precision = _precision(hardware, timer, model, kwargs, patch)
        seconds = timer(model, kwargs, patch, precision)
        timed.append((kwargs, precision, seconds))
        reasons.append(
            f"timed width {width}: {seconds * 1000:.0f} ms a step in {precision} "
            f"({share / seconds:.0f} steps in the {share / 60:.1f} min training share)"
        )
        if share / seconds < MIN_STEPS:
            break  # a wider one is slower still
    fitting = [entry for entry in timed if share / entry[2] >= MIN_STEPS] or timed[:1]
    kwargs, precision, seconds = fitting[-1]
    steps = int(fixed.get("steps") or max(1, share / seconds))
    reasons.append(
        f"chose width {kwargs.get('base_channels', 'default')}: the widest that trains "
        f"{MIN_STEPS} steps in the share; {steps} steps fill it"
    )
    return {
        "model": model,
        "model_kwargs": kwargs,
        "patch": list(patch),
        "batch": BATCH,
        "precision": precision,
        "steps": steps,
        "seconds_per_step": seconds,
        "lr": LEARNING_RATE,
        "warmup": WARMUP,
        "val_every": max(1, steps // VALIDATIONS),
        "target_spacing": list(f.target_spacing),
        "in_plane": list(in_plane_axes(f.target_spacing)),
        "time_budget": allowance,
        "reasons": reasons,
    }


def _precision(
    hardware: Hardware, timer: StepTimer, model: str, kwargs: dict[str, Any], patch
) -> str:
    """bf16 where the machine computes in it and it times faster than fp32; fp16 on a GPU
    without bf16; else fp32."""
    if hardware.gpu:
        return "bf16" if hardware.gpu_bf16 else "fp16"
    if not hardware.cpu_bf16:
        return "fp32"
    faster = timer(model, kwargs, patch, "bf16") < timer(model, kwargs, patch, "fp32")
    return "bf16" if faster else "fp32"
