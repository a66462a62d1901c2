"""Training on a data set of volumes, from `python -m trainers.train --data msd:PATH` with no
other flag: cases read and split, normalized, planned (`trainers.volumes.plan`), trained on 3D
patches with Dice + IoU loss until the steps or the time end, validated on whole cases, the best
weights kept, and the test cases scored in millimetres and millilitres.

The run folder holds what the image runs hold (plan.json, split.json, metrics.csv,
train_config.json with the loop's training seconds, config.json and model.safetensors for
`zoo.from_pretrained`, eval/), so `trainers.predict` and the Hub take it as they take those.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import zoo
from trainers.fit.budget import Budget, cosine, parse_duration
from trainers.fit.checkpoint import write_json
from trainers.fit.loop import append_csv, training_seconds
from trainers.fit.losses import DiceIoULoss
from trainers.fit.plan_rules import Hardware
from trainers.fit.steps import time_step, train_step
from trainers.scores import metrics
from trainers.volumes.cases import Ready, prepare, read_case
from trainers.volumes.evaluate import evaluate_cases, summary_lines
from trainers.volumes.infer import VolumeRecipe, probabilities_of
from trainers.volumes.intensity import Intensity
from trainers.volumes.layouts import VolumeSource, modality_of, parse_volume_spec
from trainers.volumes.patches import PatchSampler
from trainers.volumes.plan import VolumeFingerprint, make_volume_plan


def run_volumes(args: argparse.Namespace) -> Path:
    """Train as the command line says, on the volumes `args.data` names; the run folder."""
    started = time.monotonic()
    source = parse_volume_spec(args.data)
    run_dir = _run_dir(getattr(args, "output", None), source)
    print(f"data: {source.kind}:{source.root}, split by case {_counts(source)}")
    train_cases = [read_case(case) for case in source.cases["train"]]
    val_cases = [read_case(case) for case in source.cases.get("val", [])]
    modalities = [modality_of(name) for name in source.channel_names]
    intensity = Intensity.fit(
        [image.array for image, _ in train_cases],
        [label.array for _, label in train_cases],
        modalities,
    )
    plan = _plan(args, source, train_cases, intensity)
    recipe = VolumeRecipe(
        tuple(plan["target_spacing"]),
        tuple(plan["patch"]),
        intensity,
        source.modality,
        source.channel_names,
    )
    train_ready = [
        prepare(image, label, recipe.target_spacing, intensity) for image, label in train_cases
    ]
    val_ready = [
        prepare(image, label, recipe.target_spacing, intensity) for image, label in val_cases
    ]
    del train_cases, val_cases
    # the time allowed counts from the command: what reading and planning took comes off it
    plan["time_budget"] = max(plan["time_budget"] - (time.monotonic() - started), 60.0)
    write_json(run_dir / "plan.json", plan)
    write_json(run_dir / "split.json", source.split_listing())
    model = _train(run_dir, plan, recipe, source, train_ready, val_ready, getattr(args, "seed", 0))
    if getattr(args, "evaluate", True) and source.cases.get("test"):
        _evaluate(run_dir, source)
    del model
    print(f"run folder: {run_dir} ({(time.monotonic() - started) / 60:.1f} min from the command)")
    return run_dir


def _plan(args: argparse.Namespace, source: VolumeSource, train_cases, intensity) -> dict:
    """The plan of the training cases' fingerprint on this machine (the user's flags kept),
    its reasons printed."""
    fingerprint = VolumeFingerprint(
        tuple(image.spacing for image, _ in train_cases),
        tuple(image.shape for image, _ in train_cases),
        source.modality,
        len(source.channel_names),
        len(source.class_names),
    )
    allowance = parse_duration(args.time_budget) if getattr(args, "time_budget", None) else None
    plan = make_volume_plan(
        fingerprint,
        Hardware.detect(),
        _timer(len(source.channel_names), len(source.class_names)),
        fixed={
            "model": _volume_model(getattr(args, "model", None)),
            "model_kwargs": getattr(args, "model_kwargs", None) or {},
            "steps": getattr(args, "steps", None),
        },
        **({"allowance": allowance} if allowance else {}),
    )
    plan["reasons"].append(f"intensity: {intensity.describe()}")
    for line in plan["reasons"]:
        print(f"plan: {line}")
    return plan


def _evaluate(run_dir: Path, source: VolumeSource) -> None:
    """The best weights scored on the test cases (in float32, as trainers.evaluate scores)."""
    best = zoo.from_pretrained(run_dir)
    summary = evaluate_cases(
        best, source.cases["test"], source.class_names, output=run_dir / "eval"
    )
    for line in summary_lines(summary):
        print(f"test: {line}")


@dataclass
class Record:
    """What a run keeps as it goes: each interval's row in metrics.csv (and on the console), and
    the weights whenever the validation Dice is the best so far (`save_best`)."""

    path: Path
    batch: int
    save_best: Callable[[], None]
    best: float = -1.0
    losses: list[torch.Tensor] = field(default_factory=list)
    since: float = field(default_factory=time.perf_counter)

    def interval(
        self, step: int, lr: float, validate: Callable[[], tuple[float, float]], left: str
    ) -> None:
        """Close an interval at `step`: its training seconds counted, then `validate` run for
        the validation Dice and IoU (its time outside the interval's)."""
        seconds = time.perf_counter() - self.since
        dice, iou = validate()
        loss = torch.stack(self.losses).mean().item()
        row = {"step": step, "lr": f"{lr:.3g}", "train_loss": f"{loss:.5f}"}
        row |= {"val_dice": f"{dice:.5f}", "val_iou": f"{iou:.5f}", "seconds": f"{seconds:.1f}"}
        append_csv(
            self.path, row | {"images_per_s": f"{len(self.losses) * self.batch / seconds:.2f}"}
        )
        print(f"step {step}: loss {loss:.4f}, validation Dice {dice:.4f}, {left} left")
        if dice > self.best or math.isnan(dice):
            self.best = dice
            self.save_best()
        self.losses, self.since = [], time.perf_counter()


def _train(
    run_dir: Path,
    plan: dict[str, Any],
    recipe: VolumeRecipe,
    source: VolumeSource,
    train_ready: list[Ready],
    val_ready: list[Ready],
    seed: int,
) -> zoo.SegmentationModel:
    """The loop: steps until the budget ends, validated every `val_every` steps, the best kept."""
    torch.manual_seed(seed)
    classes, channels = len(source.class_names), len(source.channel_names)
    model = zoo.create_model(
        plan["model"], num_classes=classes, in_channels=channels, **plan["model_kwargs"]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["lr"], weight_decay=3e-5)
    sampler = PatchSampler(train_ready, plan["patch"], plan["batch"], tuple(plan["in_plane"]), seed)
    loss_fn = DiceIoULoss(check_values=False, batch=True)
    budget, step = Budget(plan["steps"], plan["time_budget"]), 0
    saved = {"input_size": list(plan["patch"]), "classes": list(source.class_names)}
    saved |= {"dataset": source.kind, "volume": recipe.to_config()}
    record = Record(
        run_dir / "metrics.csv", plan["batch"], lambda: zoo.save_pretrained(model, run_dir, **saved)
    )
    budget.start()
    while not budget.over(step):
        warm = min(1.0, (step + 1) / plan["warmup"])
        for group in optimizer.param_groups:
            group["lr"] = plan["lr"] * cosine(budget.progress(step)) * warm
        images, labels = sampler.batch()
        loss = train_step(model, images, labels, loss_fn, optimizer, None, plan["precision"])
        record.losses.append(loss)
        step += 1
        if step % plan["val_every"] == 0 or budget.over(step):
            scores = functools.partial(
                validate, model, val_ready, recipe.patch, classes, plan["precision"]
            )
            record.interval(step, optimizer.param_groups[0]["lr"], scores, budget.left())
    _write_note(run_dir, plan, source, budget, step, record.best)
    return model


def _write_note(
    run_dir: Path,
    plan: dict[str, Any],
    source: VolumeSource,
    budget: Budget,
    step: int,
    best: float,
) -> None:
    """train_config.json: the settings (plan.json has the reasons) and how the run ended."""
    note = {
        "ended_by": budget.ended_by(step),
        "steps": step,
        "seconds": round(budget.elapsed(), 1),
        "training_seconds": round(training_seconds(run_dir), 1),
        "best_val_dice": best,
    }
    settings = {key: value for key, value in plan.items() if key != "reasons"}
    write_json(
        run_dir / "train_config.json",
        {"data": f"{source.kind}:{source.root}", **settings, "note": note},
    )
    print(
        f"ended by the {note['ended_by']} after {step} steps, {note['seconds']:.0f} s "
        f"({note['training_seconds']:.0f} s of them training, validation excluded); best "
        f"validation Dice {best:.4f}"
    )


@torch.inference_mode()
def validate(
    model: zoo.SegmentationModel,
    cases: list[Ready],
    patch: tuple[int, ...],
    classes: int,
    precision: str,
) -> tuple[float, float]:
    """The means over validation cases and foreground classes of Dice and IoU at the target
    spacing (a class absent from both target and prediction left out); NaN without cases."""
    scores = []
    for case in cases:
        labels = probabilities_of(model, case.image, patch, precision).argmax(0).numpy()
        target = case.label.numpy()
        for c in range(1, classes):
            found = metrics.confusion(labels == c, target == c)
            if found.tp + found.fp + found.fn:
                scores.append((metrics.dice(found), metrics.iou(found)))
    model.train()
    if not scores:
        return math.nan, math.nan
    dice, iou = (math.fsum(column) / len(scores) for column in zip(*scores, strict=True))
    return dice, iou


def _timer(channels: int, classes: int):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def timer(
        model: str, kwargs: dict[str, Any], patch: tuple[int, int, int], batch: int, precision: str
    ) -> float:
        return time_step(
            model,
            kwargs,
            patch,
            batch,
            precision,
            in_channels=channels,
            num_classes=classes,
            device=device,
        )

    return timer


def _volume_model(name: str | None) -> str | None:
    """`--model`, checked to be a volume model (a plugin registered with spatial_dims=3)."""
    if name and zoo.get_spec(name).spatial_dims != 3:
        raise ValueError(
            f"model '{name}' takes 2D images; volumes need a volume model (a plugin registered "
            "with spatial_dims=3), such as unet3d"
        )
    return name


def _counts(source: VolumeSource) -> str:
    return ", ".join(f"{split} {len(cases)}" for split, cases in source.cases.items())


def _run_dir(output: str | None, source: VolumeSource) -> Path:
    run_dir = (
        Path(output)
        if output
        else Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{source.kind}-unet3d"
    )
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(
            f"run folder {run_dir} already holds files; choose another --output (nothing is "
            "overwritten)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
