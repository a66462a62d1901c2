"""The plan for a command line's run: the data set fingerprinted, this machine detected and its
speed timed, the explicit flags kept (`trainers.plan` holds the rules)."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from trainers.budget import parse_duration
from trainers.config import FIELDS, TrainConfig
from trainers.data import parse_spec
from trainers.data.fingerprint import describe, fingerprint
from trainers.plan import Candidate, Hardware, make_plan
from trainers.steps import time_step

# Explicit flags the plan builds around (the candidates it times keep them).
KEPT = ("model", "model_kwargs", "image_size", "batch_size", "steps", "precision")
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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timings: dict[str, float] = {}

    def timer(candidate: Candidate, precision: str) -> float:
        seconds = time_step(
            candidate.model, candidate.model_kwargs, candidate.crop, candidate.batch, precision,
            in_channels=in_channels, num_classes=num_classes, device=device,
        )  # fmt: skip
        timings[f"{candidate.describe()}, {precision}"] = seconds
        return seconds

    budget = getattr(args, "time_budget", None)
    settings, reasons = make_plan(
        measured, Hardware.detect(), timer=timer,
        seconds=parse_duration(budget) if budget else None, fixed=fixed,
    )  # fmt: skip
    print("fingerprint:\n  " + "\n  ".join(describe(measured)))
    print("plan (explicit flags win):\n  " + "\n  ".join(reasons))
    chosen = Candidate(settings["model"], settings["model_kwargs"], settings["image_size"],
                       settings["batch_size"]).describe()  # fmt: skip
    step_seconds = timings.get(f"{chosen}, {settings['precision']}", 0.0)
    note = {"reasons": reasons, "fingerprint": describe(measured), "timings_s": timings,
            "step_seconds": step_seconds}  # fmt: skip
    return {**settings, "note": note}


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
