"""The training loop: from the settings to the best weights, validated and checkpointed every
`--val-every` steps, then the threshold tuned on the validation images, the test split
evaluated and the run published, as configured.

    run_dir = train(config)   # a TrainConfig (`trainers.fit.settings`), e.g. from the command line

Reads top to bottom: processes, data, model, the loop of steps (validation and a checkpoint
every interval), threshold, evaluation, push. The run is counted in optimizer steps and ends by
its step count or its time budget, whichever comes first (`trainers.fit.budget`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import zoo
from trainers import ranks
from trainers.data import SegmentationDataset
from trainers.data.sampling import steps_per_pass
from trainers.fit.average import WeightAverage
from trainers.fit.budget import Budget, cosine, parse_duration
from trainers.fit.checkpoint import load_checkpoint, save_checkpoint, trim_metrics, write_json
from trainers.fit.losses import DiceIoULoss, check_target_values
from trainers.fit.prepare import (
    build_model,
    make_datasets,
    make_loader,
    make_optimizer,
    prepare_run_dir,
    resolve_precision,
    run_length,
    seed_generators,
    set_kernels,
    validation_interval,
    write_settings,
)
from trainers.fit.settings import TrainConfig
from trainers.fit.steps import grad_scaler, train_step
from trainers.scores import metrics
from trainers.scores.scoring import class_map, confusions, mean_overlap, predict_probabilities

CSV_FIELDS = ["step", "lr", "train_loss", "val_dice", "val_iou", "images_per_s", "seconds"]
F1_TOLERANCE = 0.002  # a validation F1 this close to the best is as good as the best
CHECK_EVERY = 10  # steps between the ranks' shared look at the clock (a broadcast each)


@dataclasses.dataclass
class RunState:
    """Where a run stands: steps taken, seconds spent (all processes of a resumed run), and the
    best validation Dice with the step it was reached at."""

    step: int = 0
    seconds: float = 0.0
    best_dice: float = -1.0
    best_step: int = 0


@torch.inference_mode()
def validate(
    model: zoo.SegmentationModel, val_set, precision: str, num_classes: int, threshold: float
) -> tuple[float, float]:
    """Mean Dice and IoU over the validation images inside their regions of interest, shared
    out between the ranks (each predicts every world-th image on its device, under autocast)
    and summed over them; images with no class in prediction or target are left out."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    totals = [0.0, 0.0, 0.0]  # Dice sum, IoU sum, images counted
    for index in range(rank, len(val_set), world):
        item = val_set[index]
        probabilities = predict_probabilities(model, item["image"], precision=precision)
        pred = class_map(probabilities, threshold)
        found = confusions(pred, item["mask"].numpy(), item["roi"].numpy(), num_classes)
        dice, iou = mean_overlap(found)
        if not math.isnan(dice):
            totals = [totals[0] + dice, totals[1] + iou, totals[2] + 1]
    model.train()
    dice_sum, iou_sum, count = all_ranks_sum(totals, next(model.parameters()).device)
    return (dice_sum / count, iou_sum / count) if count else (math.nan, math.nan)


def all_ranks_sum(values: list[float], device: torch.device) -> list[float]:
    """`values` summed over the processes of a distributed run (unchanged in a single one)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shared_progress(budget: Budget, step: int, device: torch.device) -> float:
    """The run's progress as rank 0 sees it, on every rank: one learning rate and one end for
    all, though their clocks differ by a little."""
    progress = budget.progress(step)
    if dist.is_initialized() and budget.seconds is not None:
        tensor = torch.tensor([progress], dtype=torch.float64, device=device)
        dist.broadcast(tensor, 0)
        progress = tensor.item()
    return progress


def training_seconds(run_dir: Path) -> float:
    """The seconds the loop spent training, validation and checkpoints excluded: the sum of
    metrics.csv's intervals (every process of a resumed run)."""
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return sum(float(row["seconds"]) for row in csv.DictReader(handle))


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def restore(
    run_dir: Path, model, optimizer, average: WeightAverage | None, main_process: bool, save_best
) -> RunState:
    """Load the last checkpoint into `model`, `optimizer` and the weights' `average`; the state
    to go on from. What a killed run may have left is tidied: log lines, temporary files, best
    weights not written."""
    weights, saved = load_checkpoint(run_dir)
    if "best_step" not in saved:
        raise ValueError(f"{run_dir} was trained by epochs with an older bioseg; start a new run")
    model.load_state_dict(weights)
    optimizer.load_state_dict(saved["optimizer"])
    if average is not None and "average" in saved:
        average.load_state_dict(saved["average"])
    state = RunState(saved["step"], saved["elapsed"], saved["best_dice"], saved["best_step"])
    if main_process:
        trim_metrics(run_dir / "metrics.csv", state.step)
        for leftover in run_dir.glob(".*.tmp"):
            leftover.unlink()
        if state.best_step == state.step:  # killed before the best was saved
            save_best()
        print(f"resuming {run_dir} after step {state.step} (best Dice {state.best_dice:.4f})")
    return state


@dataclasses.dataclass
class Run:
    """What the loop works with: the settings, the model (and the network it trains through,
    compiled or distributed; the average of its weights with --ema), the data, and how the run
    is measured and ends."""

    config: TrainConfig
    run_dir: Path
    model: zoo.SegmentationModel
    net: nn.Module
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    val_set: SegmentationDataset
    num_classes: int
    precision: str
    budget: Budget
    val_every: int
    main_process: bool
    save_best: Callable[[], None]

    @property
    def scored(self) -> zoo.SegmentationModel:
        """The weights validated and saved: the average with --ema, else the model's own."""
        return self.average.model if self.average else self.model


def train(config: TrainConfig, resume: bool = False, plan: dict | None = None) -> Path:
    """Run the training described by `config`; returns the run folder, where `plan` (the
    settings the plan derived, with its reasons) is kept as plan.json."""
    rank, world, device = ranks.setup()
    seed_generators(config.seed + rank)
    set_kernels(config.deterministic, device)
    run_dir, resume = prepare_run_dir(config, resume)
    config.output = str(run_dir)
    precision = resolve_precision(config.precision, device)

    # Data and model; a normalization of the run's own replaces the model's, in its config too.
    spec = zoo.get_spec(config.model)
    if config.mean:
        spec = dataclasses.replace(spec, mean=tuple(config.mean), std=tuple(config.std))
    train_set, val_set, num_classes, source = make_datasets(config, spec, rank)
    model = build_model(config, spec, num_classes, config.pretrained and not resume, device)
    optimizer = make_optimizer(config, model)
    average = WeightAverage(model, config.ema) if config.ema else None

    save_best = best_saver(config, average.model if average else model, run_dir, source)
    state = (
        restore(run_dir, model, optimizer, average, rank == 0, save_best) if resume else RunState()
    )
    per_pass = steps_per_pass(len(train_set), config.batch_size, world)
    total = run_length(config, per_pass)
    seconds = parse_duration(config.time_budget) if config.time_budget else None
    net = torch.compile(model) if config.compile else model
    net = DistributedDataParallel(net) if world > 1 else net
    run = Run(
        config,
        run_dir,
        model,
        net,
        optimizer,
        average,
        val_set,
        num_classes,
        precision,
        Budget(total, seconds, spent=state.seconds),
        validation_interval(config, total),
        rank == 0,
        save_best,
    )
    if run.main_process:
        write_settings(run_dir, config, plan)
        print(describe_start(run, len(train_set), per_pass, total))
    loader = make_loader(train_set, config, range(state.step, total or 2**62), rank, world)
    state = train_steps(run, loader, state)
    if world > 1:
        dist.destroy_process_group()
    if run.main_process:
        write_note(run, state)
        if num_classes == 1 and (run_dir / "config.json").is_file():
            tune_threshold(run_dir, val_set, precision, config.threshold)
        finish(config, run_dir, source)
    return run_dir


def describe_start(run: Run, crops: int, per_pass: int, total: int) -> str:
    """The run's data and length, as printed at its start."""
    budget = run.config.time_budget
    length = f"{total} steps" if total else f"steps until the {budget} are spent"
    return (
        f"data: {crops} training crops a pass ({per_pass} steps), {len(run.val_set)} validation "
        f"images; {length} in {run.precision}, validated every {run.val_every}"
    )


def best_saver(
    config: TrainConfig, model: zoo.SegmentationModel, run_dir: Path, source: Any
) -> Callable[[], None]:
    """What saves the best weights so far, ready for from_pretrained and the Hub."""

    def save_best() -> None:
        zoo.save_pretrained(
            model,
            run_dir,
            input_size=[config.image_size, config.image_size],
            threshold=config.threshold or 0.5,
            classes=list(source.class_names),
            dataset=source.kind,
            objects=config.objects,
            **({"object_width": config.object_width} if config.object_width else {}),
        )

    return save_best


def write_note(run: Run, state: RunState) -> None:
    """What ended the run, its steps and seconds (training alone, validation excluded): kept in
    train_config.json and printed."""
    note = {
        "ended_by": run.budget.ended_by(state.step),
        "steps": state.step,
        "seconds": round(run.budget.elapsed(), 1),
        "training_seconds": round(training_seconds(run.run_dir), 1),
    }
    write_settings(run.run_dir, run.config, note=note)
    print(
        f"ended by the {note['ended_by']} after {state.step} steps, {note['seconds']:.0f} s "
        f"({note['training_seconds']:.0f} s of them training, validation excluded)"
    )


def train_steps(run: Run, loader: DataLoader, state: RunState) -> RunState:
    """Train from `state` until the budget ends the run, validating and checkpointing every
    `run.val_every` steps and at the end. The loss stays on the device and is read once per
    interval; the clock is shared between ranks every CHECK_EVERY steps."""
    config, device = run.config, next(run.model.parameters()).device
    loss_fn = DiceIoULoss(  # the object target's thin classes are always scored over the batch
        config.dice_weight,
        config.iou_weight,
        check_values=False,
        batch=config.batch_dice or config.objects,
    )
    scaler = grad_scaler(run.precision, device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    bar = tqdm(
        total=run.budget.steps or None,
        initial=state.step,
        disable=rank != 0,
        file=sys.stdout,
        dynamic_ncols=True,
        desc="steps",
    )
    interval = {"loss": torch.zeros((), device=device), "seen": 0, "since": time.perf_counter()}
    run.budget.start()
    progress = shared_progress(run.budget, state.step, device)
    batches = iter(loader)
    while progress < 1:
        batch = next(batches, None)
        if batch is None:
            break
        warm = min(1.0, (state.step + 1) / config.warmup) if config.warmup else 1.0
        for group in run.optimizer.param_groups:  # the cosine over the run: steps or time
            group["lr"] = config.lr * cosine(progress) * warm
        check_target_values(batch["mask"], run.num_classes)  # on the CPU: no device sync
        images = batch["image"].to(device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["mask"].to(device, non_blocking=True)
        torch.manual_seed(config.seed * 1_000_003 + state.step * 1009 + rank)  # dropout's draws
        started = time.perf_counter()
        loss = train_step(run.net, images, target, loss_fn, run.optimizer, scaler, run.precision)
        if config.compile and state.step == 0:  # the first step compiles: not charged
            run.budget.exclude(time.perf_counter() - started)
            print(f"compiled in {time.perf_counter() - started:.1f} s (not charged to the budget)")
        if run.average:
            run.average.update()
        interval["loss"] += loss * len(images)
        interval["seen"] += len(images)
        state.step += 1
        bar.update()
        if not dist.is_initialized() or state.step % CHECK_EVERY == 0:
            progress = shared_progress(run.budget, state.step, device)
        else:  # between the ranks' looks at the clock, the steps alone move the run on
            progress = max(progress, run.budget.step_fraction(state.step))
        if state.step % run.val_every == 0 or progress >= 1:
            end_of_interval(run, state, interval, bar)
    bar.close()
    return state


def end_of_interval(run: Run, state: RunState, interval: dict[str, Any], bar: tqdm) -> None:
    """Validate (every rank its share), log the interval's row in metrics.csv, write the
    checkpoint and, when the validation Dice is the best so far, the best weights."""
    seconds = time.perf_counter() - interval["since"]
    seen, loss_sum = all_ranks_sum(
        [interval["seen"], interval["loss"].item()], interval["loss"].device
    )
    threshold = run.config.threshold or 0.5
    val_dice, val_iou = validate(run.scored, run.val_set, run.precision, run.num_classes, threshold)
    state.seconds = run.budget.elapsed()
    if run.main_process:
        bar.set_postfix(
            loss=f"{loss_sum / max(seen, 1):.4f}",
            val_dice=f"{val_dice:.4f}",
            img_s=f"{seen / seconds:.1f}",
            **_left(run.budget),
        )
        append_csv(
            run.run_dir / "metrics.csv",
            {
                "step": state.step,
                "lr": f"{run.optimizer.param_groups[0]['lr']:.3g}",
                "train_loss": f"{loss_sum / max(seen, 1):.5f}",
                "val_dice": f"{val_dice:.5f}",
                "val_iou": f"{val_iou:.5f}",
                "images_per_s": f"{seen / seconds:.2f}",
                "seconds": f"{seconds:.1f}",
            },
        )
        improved = val_dice > state.best_dice or math.isnan(val_dice)
        if improved:
            state.best_dice = state.best_dice if math.isnan(val_dice) else val_dice
            state.best_step = state.step
        # The checkpoint first: if the process dies before the best weights are written, the
        # resumed run writes them from this checkpoint (best_step == step).
        save_checkpoint(
            run.run_dir,
            state.step,
            run.model.state_dict(),
            {
                "optimizer": run.optimizer.state_dict(),
                "step": state.step,
                "elapsed": state.seconds,
                "best_dice": state.best_dice,
                "best_step": state.best_step,
                **({"average": run.average.state_dict()} if run.average else {}),
            },
        )
        if improved:
            run.save_best()
    if dist.is_initialized():  # the others wait here, not inside the next gradient sync
        dist.barrier()
    interval.update(loss=torch.zeros_like(interval["loss"]), seen=0, since=time.perf_counter())


def _left(budget: Budget) -> dict[str, str]:
    return {"left": budget.left()} if budget.seconds is not None else {}


@torch.inference_mode()
def tune_threshold(
    run_dir: Path, val_set: SegmentationDataset, precision: str, explicit: float
) -> None:
    """The threshold at which the best weights have their best pooled F1 (Dice) on the
    validation images, to 0.01: of those within `F1_TOLERANCE` of the best F1, the nearest 0.5.
    Saved in config.json unless `explicit` (--threshold) was given, which is kept and the tuned
    one reported beside it. Never chosen on the test split; nothing changes without validation
    images or without foreground in them."""
    model = zoo.from_pretrained(run_dir).to(_device())
    scores, targets = [], []
    for index in range(len(val_set)):
        item = val_set[index]
        roi = item["roi"].numpy()
        scores.append(predict_probabilities(model, item["image"], precision=precision)[0][roi])
        targets.append(item["mask"].numpy()[roi] == 1)
    try:
        if not scores:
            raise ValueError("no validation images")
        curve = metrics.precision_recall_curve(np.concatenate(scores), np.concatenate(targets))
    except ValueError as error:  # no validation images, or no foreground in them
        print(f"threshold left at the configured one: {error}")
        return
    tuned = min(max(round(curve.threshold_near(0.5, F1_TOLERANCE), 2), 0.01), 0.99)
    found = (
        f"the nearest 0.5 within {F1_TOLERANCE} of the best validation F1, "
        f"{curve.best_f1:.4f} at {curve.best_threshold:.2f}"
    )
    if warning := edge_warning(curve.best_threshold):
        print(warning)
    if explicit:
        print(
            f"threshold {explicit:.2f} kept (--threshold, or the model --finetune starts "
            f"from); the validation images' would be {tuned:.2f} ({found})"
        )
        return
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text())
    write_json(config_file, {**config, "threshold": tuned, "threshold_from": "validation"})
    print(f"threshold {tuned:.2f} ({found})")


def edge_warning(best_threshold: float) -> str:
    """A warning when the validation F1 is best at the edge of the thresholds (0.01 or 0.99,
    and beyond), else "": a threshold there is weakly determined and must not pass silently."""
    if 0.01 < round(best_threshold, 2) < 0.99:
        return ""
    return (
        f"warning: the validation F1 is best at the edge of the thresholds, {best_threshold:.2f}: "
        "the model's probabilities sit at one extreme, so the threshold is weakly determined "
        "there; look at the validation curve before trusting it"
    )


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def finish(config: TrainConfig, run_dir: Path, source: Any) -> None:
    """Evaluate the best weights on the test split and publish the run, as configured."""
    if config.evaluate and "test" in source.splits():
        from trainers.evaluate import evaluate

        summary = evaluate(  # a resumed or extended run replaces its earlier evaluation
            str(run_dir), config.data, split="test", output=run_dir / "eval", overwrite=True
        )
        print(f"test: Dice {summary['metrics']['dice']['mean']:.4f} ({run_dir / 'eval'})")
    if config.push_to_hub:
        from huggingface_hub import get_token

        from trainers.hub.push import push_run, push_space

        token = get_token()  # the command line's own login: never a server's
        url = push_run(run_dir, config.push_to_hub, token=token, space_id=config.space or None)
        print(f"published: {url}")
        if config.space:
            print(f"space: {push_space(config.push_to_hub, config.space, token=token)}")
