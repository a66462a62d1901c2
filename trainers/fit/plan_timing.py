"""The plan for a command line's run: the data set fingerprinted, this machine detected and its
speed timed, the explicit flags kept (`trainers.fit.plan_rules` holds the rules)."""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import torch

from trainers.data import parse_spec
from trainers.data.fingerprint import Fingerprint, describe, fingerprint
from trainers.data.targets import OBJECT_CLASSES
from trainers.fit.budget import parse_duration
from trainers.fit.plan_finetune import finetune_plan
from trainers.fit.plan_rules import Candidate, Hardware, Timer, make_plan
from trainers.fit.settings import FIELDS, TrainConfig
from trainers.fit.steps import time_step

# Explicit flags the plan builds around (the candidates it times keep them).
KEPT = (
    "model",
    "model_kwargs",
    "image_size",
    "batch_size",
    "steps",
    "precision",
    "objects",
    "invert",
    "balance_grounds",
    "ema",
)
MIN_IMAGES = 2  # one to train on and one to validate


def auto_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the plan derives for `args.data` on this machine, printed with a reason each;
    under "note" (which --config ignores) the reasons, the fingerprint and the measured seconds
    per step."""
    source = parse_spec(args.data)
    measured = fingerprint(source)
    if measured.images < MIN_IMAGES:
        raise ValueError(
            f"{args.data} has {measured.images} training image(s); the plan needs at least "
            f"{MIN_IMAGES} (one to train on, one to validate)"
        )
    fixed = {name: getattr(args, name) for name in KEPT if hasattr(args, name)}
    if "image_size" in fixed and fixed["image_size"] > max(measured.heights[2], measured.widths[2]):
        raise ValueError(
            f"--image-size {fixed['image_size']} is larger than every image of {args.data} "
            f"(the largest is {measured.heights[2]}x{measured.widths[2]}); choose a smaller crop"
        )
    in_channels = getattr(args, "in_channels", measured.channels)
    num_classes = len(measured.foreground) if len(measured.foreground) > 1 else 1
    num_classes += num_classes > 1  # and the background
    if getattr(args, "objects", measured.objects):
        num_classes = len(OBJECT_CLASSES)
    hardware = Hardware.detect()
    timings: dict[str, float] = {}
    timer = step_timer(source, measured, in_channels, num_classes, hardware, timings)
    budget = getattr(args, "time_budget", None)
    settings, reasons = make_plan(
        measured,
        hardware,
        timer=timer,
        seconds=parse_duration(budget) if budget else None,
        fixed=fixed,
    )
    print("fingerprint:\n  " + "\n  ".join(describe(measured)))
    print("plan (explicit flags win):\n  " + "\n  ".join(reasons))
    chosen = Candidate(
        settings["model"], settings["model_kwargs"], settings["image_size"], settings["batch_size"]
    ).describe()
    step_seconds = timings.get(f"{chosen}, {settings['precision']}", 0.0)
    note = {
        "reasons": reasons,
        "fingerprint": describe(measured),
        "timings_s": timings,
        "step_seconds": step_seconds,
    }
    return {**settings, "note": note}


def step_timer(
    source: Any,
    measured: Fingerprint,
    in_channels: int,
    num_classes: int,
    hardware: Hardware,
    timings: dict[str, float],
) -> Timer:
    """A Timer of training steps on this machine, the loader's crops of `source` included;
    each measurement is kept in `timings` under the candidate's description."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def timer(candidate: Candidate, precision: str) -> float:
        step = time_step(
            candidate.model,
            candidate.model_kwargs,
            candidate.crop,
            candidate.batch,
            precision,
            in_channels=in_channels,
            num_classes=num_classes,
            device=device,
        )
        crops = candidate.batch * crop_seconds(source, candidate.crop, in_channels, measured)
        seconds = with_loader(step, crops, hardware)
        timings[f"{candidate.describe()}, {precision}"] = seconds
        return seconds

    return timer


def auto_finetune_plan(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """The settings of a fine-tune of `base` (`trainers.fit.prepare.finetune_settings`) on
    `args.data`, printed with their reasons. The seconds the planning took come out of
    `args.time_budget`, the fine-tune's time box, which holds them."""
    started = time.monotonic()
    source = parse_spec(args.data)
    measured = fingerprint(source)
    if measured.images < 1:
        raise ValueError(f"{args.data} has no training pairs to fine-tune on")
    in_channels = int(base.get("in_channels", measured.channels))
    num_classes = len(OBJECT_CLASSES) if base.get("objects") else 1
    hardware = Hardware.detect()
    timer = step_timer(source, measured, in_channels, num_classes, hardware, {})
    settings, reasons = finetune_plan(base, measured, hardware, timer=timer)
    budget = getattr(args, "time_budget", None)
    if budget:
        spent = time.monotonic() - started
        args.time_budget = f"{max(1.0, parse_duration(budget) - spent):.0f}s"
        reasons.append(
            f"{spent:.0f} s of planning, inside --time-budget {budget}: {args.time_budget} left"
        )
    print("fingerprint:\n  " + "\n  ".join(describe(measured)))
    print("fine-tune plan (explicit flags win):\n  " + "\n  ".join(reasons))
    return {**base, **settings}


@functools.cache
def _crop_timing_set(source: Any, in_channels: int, crop: int, mean: tuple, std: tuple):
    from trainers.data import SegmentationDataset, train_transform

    samples = source.splits()["train"][:4]
    augment = train_transform(crop, mean=mean, std=std)
    return SegmentationDataset(
        samples,
        augment,
        in_channels=in_channels,
        mask_mode=source.mask_mode,
        palette=source.palette,
    )


def crop_seconds(source: Any, crop: int, in_channels: int, f: Any, count: int = 16) -> float:
    """Seconds the loader takes to cut and augment one training crop of `crop` pixels from the
    data set's images (decoded first, as the trainer keeps them decoded)."""
    mean = tuple(f.mean) if len(f.mean) == in_channels else (sum(f.mean) / len(f.mean),)
    std = tuple(max(v, 1e-3) for v in f.std)[: len(mean)]
    dataset = _crop_timing_set(source, in_channels, crop, mean, std)
    for index in range(len(dataset)):
        dataset[index]  # decoded and cached: only the crop is timed below
    started = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return (time.perf_counter() - started) / count


def with_loader(step: float, crops: float, hardware: Hardware) -> float:
    """A training step with its batch's crops: on a GPU the loader's workers cut them while the
    GPU computes (the slower of the two); on a CPU they take cores from the step (one worker on
    each core of the step's: their whole time; on more cores a share of it)."""
    if hardware.gpu:
        return max(step, crops / min(8, hardware.threads))
    return step + crops * min(1.0, 1 / max(hardware.threads - 1, 1))


def planned_settings(plan: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """The plan's settings; with another channel count given, its statistics averaged to it."""
    settings = {key: value for key, value in plan.items() if key in FIELDS}
    if in_channels != plan["in_channels"]:
        settings["mean"], settings["std"] = (
            [sum(values) / len(values)] * in_channels for values in (plan["mean"], plan["std"])
        )
    return settings


def check_budget(config: TrainConfig, plan: dict[str, Any]) -> None:
    """A ValueError when --time-budget is shorter than one validation interval at the plan's
    measured speed: the run would end before its first validation."""
    step_seconds = plan["note"].get("step_seconds", 0.0)
    if not (config.time_budget and step_seconds):
        return
    interval = config.val_every * step_seconds
    if interval > parse_duration(config.time_budget):
        raise ValueError(
            f"--time-budget {config.time_budget} is shorter than one validation interval: "
            f"{config.val_every} steps of {step_seconds:.2f} s here, about {interval:.0f} s; "
            "give a longer budget or a smaller --val-every"
        )
