"""The plan for a data set of volumes, from its fingerprint and this machine's timed steps, as
nnU-Net plans from a data set's fingerprint; printed with its reasons and kept as plan.json.

- **Spacing**: the training cases' median spacing per axis is the target every case (and every
  volume predicted later) is resampled to.
- **2D or 3D**: 3D (`unet3d`) where the target spacing's anisotropy (coarsest over finest axis)
  is below `ANISOTROPY` and a 3D width trains `MIN_STEPS` steps in the time on this machine;
  otherwise 2D on slices across the coarsest axis (`slices/unet`, `zoo/slices.py`: nnU-Net's
  `2d`), each slice of the median case's plane, as many a batch as a 3D patch's voxels.
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
SLICES = "slices/"  # zoo/slices.py: any image model over a volume's slices
SLICE_STRIDE, MAX_SLICE = 16, 512  # the 2D U-Net's total stride (depth 4); the largest side
MIN_SLICES, MAX_SLICES = 2, 64  # slices a batch
LEARNING_RATE = 3e-3
WARMUP = 50

StepTimer = Callable[[str, dict[str, Any], tuple[int, int, int], int, str], float]
"""Seconds per training step of (model, model kwargs, patch, batch, precision)."""


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


@dataclass(frozen=True)
class Shape:
    """A way to train: the model, the options each candidate adds, the patch and the batch."""

    model: str
    choices: tuple[dict[str, Any], ...]
    patch: tuple[int, int, int]
    batch: int

    def describe(self) -> str:
        return f"{self.model}, patch {'x'.join(map(str, self.patch))}, batch {self.batch}"


def make_volume_plan(
    f: VolumeFingerprint,
    hardware: Hardware,
    timer: StepTimer,
    *,
    allowance: float = ALLOWANCE,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's settings with `reasons` (a list of lines); `fixed` are the user's flags (model,
    model_kwargs, steps), which the plan keeps."""
    fixed = fixed or {}
    reasons = [f"fingerprint: {f.describe()}", f"machine: {hardware.describe()}"]
    share = allowance * TRAINING_SHARE
    anisotropy = max(f.target_spacing) / min(f.target_spacing)
    model = fixed.get("model")
    wants_3d = not model.startswith(SLICES) if model else anisotropy < ANISOTROPY
    if model:
        reasons.append(f"{model}: chosen by --model")
    elif wants_3d:
        reasons.append(
            f"3D first: the target spacing's anisotropy is {anisotropy:.1f} (< {ANISOTROPY})"
        )
    else:
        reasons.append(
            f"2D on slices: the anisotropy is {anisotropy:.1f} (>= {ANISOTROPY}): 3x3x3 kernels "
            "would see the coarse axis unlike the others (nnU-Net's 2d configuration)"
        )
    shape = volume_shape(f, hardware, model) if wants_3d else slice_shape(f, hardware, model)
    found = _search(shape, hardware, timer, share, fixed, reasons)
    if found is None and wants_3d and not model:
        slices = slice_shape(f, hardware, None)
        if in_2d := _search(slices, hardware, timer, share, fixed, reasons):
            reasons.append(f"no 3D width trains {MIN_STEPS} steps here: 2D on slices instead")
            shape, found = slices, in_2d
    why = f"the widest that trains {MIN_STEPS} steps in the share"
    if found is None:
        why = f"the narrowest: none trains {MIN_STEPS} steps in the share"
    kwargs, precision, seconds = found or _slowest_fallback(shape, hardware, timer, fixed)
    steps = int(fixed.get("steps") or max(1, share / seconds))
    reasons.append(
        f"chose {shape.describe()}, width {kwargs.get('base_channels', 'default')}, {precision}: "
        f"{why}; {steps} steps fill it"
    )
    return {
        "model": shape.model,
        "model_kwargs": kwargs,
        "patch": list(shape.patch),
        "batch": shape.batch,
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


def volume_shape(f: VolumeFingerprint, hardware: Hardware, model: str | None) -> Shape:
    """3D patches of the median case (`patch_for`); unet3d's widths, or a plugin's own options."""
    patch, depth = patch_for(f, hardware)
    if model:
        return Shape(model, ({},), patch, BATCH)
    return Shape(
        "unet3d", tuple({"base_channels": w, "depth": depth} for w in WIDTHS), patch, BATCH
    )


def slice_shape(f: VolumeFingerprint, hardware: Hardware, model: str | None) -> Shape:
    """Patches of one slice across the coarsest axis, the median case's plane (rounded up to
    the 2D U-Net's stride, at most `MAX_SLICE` a side), as many a batch as the 3D patch's voxels
    allow (`MIN_SLICES` to `MAX_SLICES`)."""
    axis = 3 - sum(in_plane_axes(f.target_spacing))
    sides = [min(MAX_SLICE, -(-side // SLICE_STRIDE) * SLICE_STRIDE) for side in f.median_shape]
    sides[axis] = 1
    limit = MAX_PATCH_VOXELS["gpu" if hardware.gpu else "cpu"]
    batch = max(MIN_SLICES, min(MAX_SLICES, limit // math.prod(sides)))
    name = model or f"{SLICES}unet"
    choices = (
        ({"axis": axis},) if model else tuple({"base_channels": w, "axis": axis} for w in WIDTHS)
    )
    return Shape(name, choices, tuple(sides), batch)


def _search(shape: Shape, hardware: Hardware, timer: StepTimer, share: float, fixed, reasons):
    """Each candidate of `shape` timed, narrowest first, until one trains too few steps; the
    widest that trains MIN_STEPS in the share (kwargs, precision, seconds), or None."""
    best = None
    for choice in shape.choices:
        kwargs = {**choice, **fixed.get("model_kwargs", {})}
        precision = _precision(hardware, timer, shape, kwargs)
        seconds = timer(shape.model, kwargs, shape.patch, shape.batch, precision)
        reasons.append(
            f"timed {shape.describe()}, width {kwargs.get('base_channels', 'default')}: "
            f"{seconds * 1000:.0f} ms a step in {precision} ({share / seconds:.0f} steps in the "
            f"{share / 60:.1f} min training share)"
        )
        if share / seconds < MIN_STEPS:
            break  # a wider one is slower still
        best = (kwargs, precision, seconds)
    return best


def _slowest_fallback(shape: Shape, hardware: Hardware, timer: StepTimer, fixed):
    """The narrowest candidate, when none trains MIN_STEPS steps: the steps the share holds."""
    kwargs = {**shape.choices[0], **fixed.get("model_kwargs", {})}
    precision = _precision(hardware, timer, shape, kwargs)
    return kwargs, precision, timer(shape.model, kwargs, shape.patch, shape.batch, precision)


def _precision(hardware: Hardware, timer: StepTimer, shape: Shape, kwargs: dict[str, Any]) -> str:
    """bf16 where the machine computes in it and it times faster than fp32; fp16 on a GPU
    without bf16; else fp32."""
    if hardware.gpu:
        return "bf16" if hardware.gpu_bf16 else "fp16"
    if not hardware.cpu_bf16:
        return "fp32"
    bf16, fp32 = (timer(shape.model, kwargs, shape.patch, shape.batch, p) for p in ("bf16", "fp32"))
    return "bf16" if bf16 < fp32 else "fp32"
