"""A training plan derived from a data set's fingerprint and the hardware, as nnU-Net derives
its own: crop size, resolution, crops per image, batch size, model width, precision, the number
of optimizer steps and how often to validate, normalization, workers, an average of the weights.

    settings, reasons = make_plan(fingerprint(source), Hardware.detect(), timer=time_step)

The model and crop are sized by the hardware's measured speed: `timer` times a few training
steps of each candidate (cheapest first; one whose cost, scaled from a timed one, could not fit
is not timed), and the plan takes the largest that completes the wanted steps in the training
share of the time it allows (`seconds`, else `ALLOWANCE`), then as many steps as that share
holds. The clock, not that count, ends the run (`steps` 0 with the time budget): a step faster
or slower than timed changes the steps, not the minutes, so the run fills its time. A faster
machine gets a wider net or larger crops, never fewer steps. `settings` are TrainConfig fields
(explicit flags win over them: pass them as `fixed`); `reasons` say, one line per choice, why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainers.data.fingerprint import Fingerprint
from zoo import cpu_has_bf16

CROPS = (128, 192, 256, 384, 512)
CONTEXT = 4  # a crop spans this many typical object widths: the object and as much each side
MAX_PATCHES = 16
MIN_SCALE = 0.25  # the most a plan reduces the resolution
PASSES = 100  # the steps wanted: each training crop seen this many times (nnU-Net: 1000 x 250)
MIN_STEPS, MAX_STEPS = 2000, 10_000  # wanted: never tens of steps; past 10,000 a larger model
ALLOWANCE = 20 * 60.0  # seconds a run allows itself without --time-budget
TRAINING_SHARE = 0.8  # of the time allowed: the rest for validation, checkpoints, the loader
VALIDATIONS = 20  # validations (and checkpoints) per run
WIDTHS = (16, 32, 64)  # the unet widths a plan may try: the timed speed decides
EMA = 0.999  # the weights' average: above the weights it averaged on all three sets, paired
LARGEST_CROP = 512
ESTIMATE_SLACK = 1.5  # a candidate is timed unless its scaled cost is this far over the budget
MIXED_GROUNDS = 0.05  # both grounds are common when each holds at least this share of images
INVERT = 0.3  # then this share of training crops is turned grey and inverted


@dataclass(frozen=True)
class Hardware:
    """What the plan is sized for: CPU threads and their bf16 units, or a GPU."""

    threads: int
    gpu_memory_gb: float = 0.0  # 0: no GPU
    gpu_name: str = ""
    gpu_bf16: bool = False  # the GPU computes in bfloat16 (Ampere and later)
    cpu_bf16: bool = False  # the CPU has bf16 matrix units (AVX-512 BF16 or AMX)

    @classmethod
    def detect(cls) -> Hardware:
        import torch

        memory, name, bf16 = 0.0, "", False
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            memory, name = properties.total_memory / 2**30, properties.name
            bf16 = torch.cuda.is_bf16_supported()
        # The CPUs this process may run on (Linux), else all of them (macOS, Windows).
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return cls(
            threads=len(usable) if usable else os.cpu_count() or 1,
            gpu_memory_gb=memory,
            gpu_name=name,
            gpu_bf16=bf16,
            cpu_bf16=cpu_has_bf16(),
        )

    @property
    def gpu(self) -> bool:
        return self.gpu_memory_gb > 0

    def describe(self) -> str:
        if self.gpu:
            kind = "bf16" if self.gpu_bf16 else "no bf16: fp16 with a GradScaler"
            return (
                f"{self.threads} CPU threads, a GPU ({self.gpu_name or 'CUDA'}) with "
                f"{self.gpu_memory_gb:.0f} GB, {kind}"
            )
        units = "bf16 matrix units" if self.cpu_bf16 else "no bf16 units"
        return f"{self.threads} CPU threads ({units}), no GPU"


@dataclass(frozen=True)
class Candidate:
    """A model and crop the plan may train, with the batch it would use."""

    model: str
    model_kwargs: dict[str, Any] = field(hash=False)
    crop: int
    batch: int

    @property
    def cost(self) -> float:
        """Compute per crop, up to a constant: width squared times pixels (the batch aside, which
        follows the crop)."""
        return model_width(self.model_kwargs) ** 2 * self.crop**2

    @property
    def size(self) -> tuple[float, int]:
        """What "larger" means: the cost, and at equal cost the wider model."""
        return self.cost, model_width(self.model_kwargs)

    def describe(self) -> str:
        return (
            f"{self.model} {self.model_kwargs or ''} at {self.crop}x{self.crop}, batch "
            f"{self.batch}".replace("  ", " ")
        )


def model_width(model_kwargs: dict[str, Any]) -> int:
    """The unet width a model's options give (its `base_channels`, 16 by default)."""
    return int(model_kwargs.get("base_channels", 16))


Timer = Callable[[Candidate, str], float]
"""Seconds per training step of a candidate at a precision ("fp32", "bf16", "fp16")."""


def make_plan(
    f: Fingerprint,
    hardware: Hardware,
    *,
    timer: Timer | None = None,
    seconds: float | None = None,
    fixed: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """TrainConfig settings for data set `f` on `hardware`, and one reason per choice.

    `timer` measures candidates (None: no timing, the smallest candidate and the wanted steps);
    `seconds` is the time the run may take (--time-budget); `fixed` holds explicit settings
    (model, model_kwargs, image_size, batch_size, steps, precision), which the plan keeps.
    """
    fixed = fixed or {}
    reasons = [f"hardware: {hardware.describe()}"]
    crop, scale = _crop_and_scale(f, hardware, reasons)
    crop = fixed.get("image_size", crop)
    patches = covering_patches(f, crop, scale, reasons)
    candidates = _candidates(f, hardware, crop, fixed)
    precision = fixed.get("precision", "auto")
    if precision == "auto":
        precision = precision_for(hardware, candidates[0], timer, reasons)
    wanted = _steps_wanted(f.images * patches, candidates[0].batch, fixed, reasons)
    allowed = seconds or ALLOWANCE
    chosen, steps, step_seconds = _fit(candidates, precision, wanted, allowed, timer, reasons)
    steps = fixed.get("steps", steps)
    clocked = bool(step_seconds) and "steps" not in fixed  # timed: the clock ends the run
    val_every = max(1, round(steps / VALIDATIONS))
    expected = steps * step_seconds if step_seconds else None
    reasons.append(_length_reason(steps, val_every, expected, allowed, bool(seconds), clocked))
    workers = min(8, hardware.threads) if hardware.gpu else (1 if hardware.threads <= 4 else 2)
    reasons += [
        f"{workers} loader worker(s): images are decoded once and cropped before augmenting, "
        f"so {'these keep the GPU' if hardware.gpu else 'few keep the CPU'} fed",
        f"{f.channels} input channel(s), normalized by the data set's own mean {list(f.mean)} "
        f"and std {list(f.std)}",
    ]
    settings = {
        "model": chosen.model,
        "model_kwargs": chosen.model_kwargs,
        "in_channels": f.channels,
        "image_size": chosen.crop,
        "patches_per_image": patches,
        "scale": scale,
        "object_width": round(max(f.width.values(), default=0.0), 2),
        "batch_size": chosen.batch,
        "steps": 0 if clocked else steps,
        "val_every": val_every,
        "precision": precision,
        "workers": workers,
        "mean": list(f.mean),
        "std": [max(s, 1e-3) for s in f.std],
    }
    if seconds or "steps" not in fixed:  # --steps alone: those steps, however long they take
        settings["time_budget"] = f"{allowed:g}s"  # what ends the run (with --steps: if first)
    chosen_too = (
        _objects(f, fixed, reasons) | _grounds(f, fixed, reasons) | _average(fixed, reasons)
    )
    return settings | chosen_too, reasons


def _length_reason(
    steps: int,
    val_every: int,
    expected: float | None,
    allowed: float,
    budgeted: bool,
    clocked: bool,
) -> str:
    """The run's length as the plan prints it: steps, validations, the time they take here."""
    reason = f"{steps} steps, validated and checkpointed every {val_every}"
    if expected:
        reason += (
            f": about {_duration(expected)} of training here, {expected / allowed:.0%} of the "
            f"{_duration(allowed)} allowed"
        )
    if not budgeted:
        reason += f" (no --time-budget: the plan allows itself {_duration(allowed)})"
    if clocked:
        reason += (
            f"; the {_duration(allowed)} end the run, not the count (steps 0), its cosine "
            "following the clock: steps faster than timed train more of them, slower ones fewer"
        )
    return reason


def _average(fixed: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """An average of the weights (EMA), validated and kept instead of them, unless a flag says
    otherwise."""
    if "ema" in fixed:
        return {}
    reasons.append(
        f"weights averaged (EMA {EMA:g}), the average validated and kept: paired with the "
        "weights it averaged, at the same step of the same runs, it scored higher on DRIVE, "
        "ISBI 2012 and DSB 2018 (+0.0003 to +0.0021 pooled test Dice, docs/benchmarks.md; "
        "--ema 0: none)"
    )
    return {"ema": EMA}


def _objects(f: Fingerprint, fixed: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """The object target where the masks label each object, unless a flag says otherwise."""
    if not f.objects or "objects" in fixed:
        return {}
    reasons.append(
        "objects: the masks label each object, so the model learns background, interior, "
        "boundary and where objects touch, its loss pooled over the batch, and a seeded "
        "watershed parts touching objects (--no-objects: the foreground alone)"
    )
    return {"objects": True}


def _grounds(f: Fingerprint, fixed: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """Where the images have both a light and a dark ground (objects dark on light in some,
    light on dark in others): grey inverted crops, and the rarer ground's images repeated so
    that each ground gives as many crops, unless flags say otherwise."""
    if not MIXED_GROUNDS <= f.light <= 1 - MIXED_GROUNDS:
        return {}
    mixed = f"{f.light:.0%} of the images have a light ground and {1 - f.light:.0%} a dark one"
    chosen: dict[str, Any] = {}
    if "invert" not in fixed:
        reasons.append(
            f"invert {INVERT:g}: {mixed}, so that share of crops is turned grey and inverted "
            "and each kind also learns from the other (--invert 0: never)"
        )
        chosen["invert"] = INVERT
    if "balance_grounds" not in fixed:
        reasons.append(
            f"grounds balanced: {mixed}, so the rarer ground's images are repeated until each "
            "ground gives about as many crops a pass (--no-balance-grounds: as they come)"
        )
        chosen["balance_grounds"] = True
    return chosen


def covering_patches(
    f: Fingerprint, crop: int, scale: float, reasons: list[str], most: int = MAX_PATCHES
) -> int:
    """Crops per image and pass: enough to cover a median image at `scale` (at most `most`)."""
    area = f.heights[0] * f.widths[0] * scale**2
    patches = min(most, max(1, math.ceil(area / crop**2)))
    reasons.append(
        f"{patches} crop(s) of {crop}x{crop} per image and pass: a median image at scale "
        f"{scale:g} is {area / crop**2:.1f} crops of area (at most {most})"
    )
    return patches


def _steps_wanted(crops: int, batch: int, fixed: dict[str, Any], reasons: list[str]) -> int:
    """--steps, or PASSES passes over a pass's `crops` at `batch`, within MIN_STEPS-MAX_STEPS."""
    if "steps" in fixed:
        reasons.append(f"{fixed['steps']} steps wanted: --steps")
        return fixed["steps"]
    wanted = min(MAX_STEPS, max(MIN_STEPS, math.ceil(PASSES * crops / batch)))
    reasons.append(
        f"{wanted} steps wanted: {PASSES} passes over the {crops} crops of a pass at batch "
        f"{batch}, within {MIN_STEPS}-{MAX_STEPS}"
    )
    return wanted


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _crop_and_scale(f: Fingerprint, hardware: Hardware, reasons: list[str]) -> tuple[int, float]:
    """The crop that holds CONTEXT object widths where the images allow, and the resolution."""
    largest = 512 if hardware.gpu else 256  # a crop the hardware trains at a useful rate
    width = max(f.width.values(), default=0.0)
    shorter = min(f.heights[0], f.widths[0])
    need = CONTEXT * width
    crop = next((c for c in CROPS if c >= need), CROPS[-1])
    crop = min(crop, largest, max(c for c in CROPS if c <= max(shorter, CROPS[0])))
    reasons.append(
        f"crop {crop}x{crop}: objects are {width:.0f} px wide (median, by area), and a crop "
        f"holds {CONTEXT} widths ({need:.0f} px) where the images ({f.heights[0]}x{f.widths[0]}) "
        f"and the hardware (at most {largest}) allow"
    )
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
    return crop, scale


def batch_for(hardware: Hardware, crop: int, width: int) -> int:
    """Crops per step: on the CPU 8 of up to 192x192, fewer of larger ones; on a GPU by memory."""
    if hardware.gpu:
        per_gb = 2 * (256 / crop) ** 2 * (32 / width)
        return int(min(128, max(8, hardware.gpu_memory_gb * per_gb)))
    return int(min(8, max(2, 8 * (192 / crop) ** 2)))


def _candidates(
    f: Fingerprint, hardware: Hardware, crop: int, fixed: dict[str, Any]
) -> list[Candidate]:
    """What the plan may train, cheapest first: the unet at each of WIDTHS, at the crop and at
    the larger ones the images hold; or the fixed model and crop alone. The hardware sizes the
    batch; its timed speed, not a list per kind of machine, decides which fit."""
    shorter = min(f.heights[0], f.widths[0])
    crops = [crop]
    if "image_size" not in fixed:  # larger crops, more context, where the images hold them
        crops += [c for c in CROPS if crop < c <= min(shorter, LARGEST_CROP)]
    if "model" in fixed:
        kwargs = [fixed.get("model_kwargs", {})]
    elif "model_kwargs" in fixed:
        kwargs = [fixed["model_kwargs"]]
    else:
        kwargs = [{"base_channels": w} for w in WIDTHS]
    model = fixed.get("model", "unet")
    found = [
        Candidate(model, k, c, fixed.get("batch_size", batch_for(hardware, c, model_width(k))))
        for k in kwargs
        for c in crops
    ]
    return sorted(found, key=lambda candidate: candidate.cost)


def precision_for(
    hardware: Hardware, smallest: Candidate, timer: Timer | None, reasons: list[str]
) -> str:
    """bf16 on a GPU that has it, else fp16; on the CPU the faster of bf16 and fp32, timed."""
    if hardware.gpu:
        precision = "bf16" if hardware.gpu_bf16 else "fp16"
        reasons.append(
            f"precision {precision}: "
            + (
                "the GPU computes in bf16"
                if hardware.gpu_bf16
                else "no bf16 on this GPU: fp16 autocast with a GradScaler"
            )
        )
        return precision
    if not hardware.cpu_bf16 or timer is None:
        reasons.append(
            "precision fp32: "
            + ("no bf16 units on this CPU" if not hardware.cpu_bf16 else "not timed")
        )
        return "fp32"
    fp32, bf16 = timer(smallest, "fp32"), timer(smallest, "bf16")
    precision = "bf16" if bf16 < fp32 else "fp32"
    reasons.append(
        f"precision {precision}: a step of {smallest.describe()} took {fp32 * 1000:.0f} ms in "
        f"fp32 and {bf16 * 1000:.0f} ms under bf16 autocast on this CPU"
    )
    return precision


def _fit(
    candidates: list[Candidate],
    precision: str,
    wanted: int,
    allowed: float,
    timer: Timer | None,
    reasons: list[str],
) -> tuple[Candidate, int, float]:
    """The largest candidate that trains `wanted` steps in TRAINING_SHARE of `allowed` seconds,
    then as many steps as that share holds (if none trains them, the fastest, with the steps
    the share holds). Every candidate is timed, cheapest first, but one that a timed
    candidate's speed, scaled by their work, puts more than ESTIMATE_SLACK times over the share.
    Returns it, its steps and its seconds per step (0: untimed)."""
    budget = allowed * TRAINING_SHARE
    if timer is None:
        reasons.append(f"model {candidates[0].describe()}: not timed; {wanted} steps wanted")
        return candidates[0], wanted, 0.0
    timed: list[tuple[Candidate, float]] = []
    skipped: list[tuple[Candidate, float]] = []
    for candidate in candidates:
        estimate = _estimate(candidate, timed)
        if estimate is not None and wanted * estimate > budget * ESTIMATE_SLACK:
            skipped.append((candidate, estimate))
            continue
        timed.append((candidate, timer(candidate, precision)))
    fits = [(c, s) for c, s in timed if wanted * s <= budget]
    listing = "; ".join(f"{c.describe()}: {s * 1000:.0f} ms" for c, s in timed)
    reasons.append(f"timed a step of each candidate ({listing})")
    if skipped:
        guesses = "; ".join(f"{c.describe()}: ~{s * 1000:.0f} ms" for c, s in skipped)
        reasons.append(f"not timed, their work scaled from a timed one too slow: {guesses}")
    if fits:
        chosen, seconds = max(fits, key=lambda pair: pair[0].size)
        why = f"the largest that trains the {wanted} steps wanted in {_duration(budget)}"
    else:
        chosen, seconds = min(timed, key=lambda pair: pair[1])
        why = f"the fastest: none trains the {wanted} steps wanted in {_duration(budget)}"
    steps = max(1, int(budget / seconds))
    reasons.append(
        f"model {chosen.describe()}: {why} ({TRAINING_SHARE:.0%} of the {_duration(allowed)} "
        f"allowed, the rest for validation and checkpoints); {steps} steps fill that time"
        + (f", {steps / wanted:.1f} times the steps wanted" if fits and steps > wanted else "")
    )
    return chosen, steps, seconds


def _estimate(candidate: Candidate, timed: list[tuple[Candidate, float]]) -> float | None:
    """Seconds a step of `candidate` would take, scaled by work from the timed candidate nearest
    in work (time grows more slowly than work, overheads shared: more often an overestimate,
    hence ESTIMATE_SLACK)."""
    if not timed:
        return None
    nearest, seconds = min(timed, key=lambda pair: abs(math.log(_work(pair[0]) / _work(candidate))))
    return seconds * _work(candidate) / _work(nearest)


def _work(candidate: Candidate) -> float:
    """Compute per step, up to a constant: the cost of a crop times the batch."""
    return candidate.cost * candidate.batch
