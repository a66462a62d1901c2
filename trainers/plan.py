"""A training plan derived from a data set's fingerprint and the hardware, as nnU-Net derives
its own: crop size, resolution, crops per image, batch size, model width, normalization, workers.

    settings, reasons = make_plan(fingerprint(source), Hardware.detect())

`settings` are TrainConfig fields (explicit flags still win over them); `reasons` say, one line
per choice, why.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from trainers.data.fingerprint import Fingerprint

CROPS = (128, 192, 256, 384, 512)
CONTEXT = 4  # a crop spans this many typical object widths: the object and as much each side
MAX_PATCHES = 16
MIN_SCALE = 0.25  # the most a plan reduces the resolution


@dataclass(frozen=True)
class Hardware:
    """What the plan is sized for: CPU threads, or a GPU and its memory."""

    threads: int
    gpu_memory_gb: float = 0.0  # 0: no GPU

    @classmethod
    def detect(cls) -> Hardware:
        import torch

        memory = 0.0
        if torch.cuda.is_available():
            memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        # The CPUs this process may run on (Linux), else all of them (macOS, Windows).
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return cls(threads=len(usable) if usable else os.cpu_count() or 1, gpu_memory_gb=memory)

    def describe(self) -> str:
        gpu = f"a GPU with {self.gpu_memory_gb:.0f} GB" if self.gpu_memory_gb else "no GPU"
        return f"{self.threads} CPU threads, {gpu}"


def make_plan(f: Fingerprint, hardware: Hardware) -> tuple[dict[str, Any], list[str]]:
    """TrainConfig settings for data set `f` on `hardware`, and one reason per choice."""
    gpu = hardware.gpu_memory_gb > 0
    largest = 512 if gpu else 256  # a crop the hardware trains at a useful rate
    width = max(f.width.values(), default=0.0)
    shorter = min(f.heights[0], f.widths[0])
    need = CONTEXT * width
    crop = next((c for c in CROPS if c >= need), CROPS[-1])
    crop = min(crop, largest, max(c for c in CROPS if c <= max(shorter, CROPS[0])))
    reasons = [
        f"hardware: {hardware.describe()}",
        f"crop {crop}x{crop}: objects are {width:.0f} px wide (median, by area), and a crop "
        f"holds {CONTEXT} widths ({need:.0f} px) where the images ({f.heights[0]}x{f.widths[0]}) "
        f"and the hardware (at most {largest}) allow",
    ]
    scale = 1.0
    if need > crop:  # nnU-Net's spacing: fewer pixels per object, so a crop holds its context
        scale = min(1.0, math.ceil(max(crop / need, crop / shorter, MIN_SCALE) * 100) / 100)
    if scale < 1:
        reasons.append(
            f"scale {scale:g}: objects wider than a {crop}-pixel crop holds {CONTEXT} times; at "
            f"this reduced resolution it holds {crop / scale / width:.1f} widths, or the whole "
            "shorter side of a median image (training, evaluation and the demo run at it; "
            "masks come back at full size)"
        )
    area = f.heights[0] * f.widths[0] * scale**2
    patches = min(MAX_PATCHES, max(1, math.ceil(area / crop**2)))
    reasons.append(
        f"{patches} crops per image and epoch: a median image is {area / crop**2:.1f} crops "
        f"of area (at most {MAX_PATCHES})"
    )
    if gpu:
        batch = int(min(128, max(8, hardware.gpu_memory_gb * 2 * (256 / crop) ** 2)))
        reason = f"{hardware.gpu_memory_gb:.0f} GB of GPU memory at {crop}x{crop}"
    else:
        batch = int(min(8, max(2, 8 * (192 / crop) ** 2)))
        reason = "the CPU: 8 crops of up to 192x192, fewer of larger ones, per step"
    reasons.append(f"batch {batch}: {reason}")
    base = 32 if gpu else 16
    reasons.append(
        f"model unet, {base} channels at full resolution: from scratch (no pretrained weights "
        f"needed), {'the GPU affords the wider net' if gpu else 'the width the CPU trains fast'}"
    )
    workers = min(8, hardware.threads) if gpu else (1 if hardware.threads <= 4 else 2)
    reasons.append(
        f"{workers} loader worker(s): images are decoded once and cropped before augmenting, "
        f"so {'few' if not gpu else 'these'} keep the {'CPU' if not gpu else 'GPU'} fed"
    )
    reasons.append(
        f"{f.channels} input channel(s), normalized by the data set's own mean {list(f.mean)} "
        f"and std {list(f.std)}"
    )
    settings = {
        "model": "unet",
        "model_kwargs": {"base_channels": base},
        "in_channels": f.channels,
        "image_size": crop,
        "patches_per_image": patches,
        "scale": scale,
        "batch_size": batch,
        "workers": workers,
        "mean": list(f.mean),
        "std": [max(s, 1e-3) for s in f.std],
    }
    return settings, reasons
