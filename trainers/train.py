"""Train a zoo model on a segmentation data set with Dice + IoU loss.

    python -m trainers.train --data drive:../shared/data/DRIVE           # the plan sizes the run
    python -m trainers.train --data dsb2018:../shared/data/DSB2018-nuclei --time-budget 20m
    python -m trainers.train --plan none --model timm/resnet18 --data folder:my_data --steps 2000
    python -m trainers.train --preset report --data isbi2012:../shared/data/ISBI2012-membrane
    torchrun --nproc-per-node 2 -m trainers.train --data ...                   # DDP, one per GPU

Reads top to bottom: settings, data, model, the loop of steps (validation and a checkpoint every
--val-every steps), threshold, evaluation, push. The run is counted in optimizer steps; the plan
(the default) chooses them, the model and the crop from the data set and this machine's timed
speed, and prints why. Precision: bf16 autocast on a GPU that has it, else fp16 with a
GradScaler; on the CPU bf16 where its matrix units make it faster, else fp32; channels_last.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from datetime import datetime
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
from trainers import metrics
from trainers.budget import Budget, cosine, parse_duration
from trainers.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trim_metrics,
    write_json,
)
from trainers.cli import exit_on_user_error
from trainers.config import TrainConfig, build_parser, load_config_file, resolve
from trainers.data import (
    SegmentationDataset,
    eval_transform,
    parse_spec,
    train_transform,
    train_val_split,
)
from trainers.data.sampling import SeededItems, StepBatches, steps_per_pass
from trainers.losses import DiceIoULoss, check_target_values
from trainers.scoring import class_map, confusions, mean_overlap, predict_probabilities
from trainers.steps import grad_scaler, train_step

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


def setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device; a process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def seed_generators(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_kernels(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels (a warning, not an error, for the few torch lacks), or the fastest:
    cuDNN's autotuner for the fixed crops, and TF32 for what runs in float32 on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run trains in: "auto" is bf16 on a GPU that has it, else fp16, and fp32 on
    a CPU (the plan times bf16 there and sets it where faster); fp16 asked of a GPU without
    bf16 stays; bf16 asked of a GPU without it becomes fp16 (said), never a crash."""
    if device.type == "cuda":
        if precision in ("auto", "bf16") and not torch.cuda.is_bf16_supported():
            if precision == "bf16":
                print("this GPU has no bf16: training in fp16 with a GradScaler instead")
            return "fp16"
        return "bf16" if precision == "auto" else precision
    if precision == "fp16":
        raise ValueError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    return "fp32" if precision == "auto" else precision


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.model.replace('/', '-')}"


def make_datasets(config: TrainConfig, spec: zoo.ModelSpec, rank: int):
    """The training and validation sets (each decoded once, within its memory bound), the number
    of output channels and the data source. Validation images stay in [0, 1]: `predict`
    normalizes them as it normalizes any image."""
    source = parse_spec(config.data)
    if config.objects:
        source = source.for_objects()
    splits = source.splits()
    train, val = splits["train"], splits.get("val") or []
    if not val and config.val_fraction > 0:
        train, val = train_val_split(train, config.val_fraction, seed=config.seed)
    common = {
        "in_channels": config.in_channels,
        "mask_mode": source.mask_mode,
        "palette": source.palette,
        "scale": config.scale,
    }
    augment = train_transform(config.image_size, mean=spec.mean, std=spec.std, invert=config.invert)
    train_set = SegmentationDataset(
        train, augment, patches_per_image=config.patches_per_image, **common
    )
    val_set = SegmentationDataset(val, eval_transform(), **common)
    for name, dataset in (("training", train_set), ("validation", val_set)):
        kept = dataset.keep_all()  # before the workers start: they inherit the decoded set
        if not kept and rank == 0:
            print(f"the {name} images are too large to keep decoded: read again for each crop")
    if config.balance_grounds:
        light, dark = train_set.balance_grounds()
        if rank == 0:
            done = "the rarer repeated" if light and dark else "one ground: nothing repeated"
            print(f"grounds: {light} training images light, {dark} dark; {done}")
    binary = len(source.class_names) == 2  # one output channel, sigmoid
    return train_set, val_set, (1 if binary else len(source.class_names)), source


def make_loader(
    train_set: SegmentationDataset, config: TrainConfig, steps: range, rank: int, world: int
) -> DataLoader:
    """One loader for the run's `steps`: its workers start once and stay; the batch of each step
    is fixed by the seed, the step and the rank (`StepBatches`)."""
    sampler = StepBatches(
        len(train_set), config.batch_size, first=steps.start, last=steps.stop,
        seed=config.seed, rank=rank, world=world,
    )  # fmt: skip
    return DataLoader(
        SeededItems(train_set),
        batch_sampler=sampler,
        num_workers=config.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=config.workers > 0,
    )


def run_length(config: TrainConfig, steps_per_pass: int) -> int:
    """The steps the run trains for: --epochs passes if given, else --steps (0: the budget's)."""
    return config.epochs * steps_per_pass if config.epochs else config.steps


def validation_interval(config: TrainConfig, total: int) -> int:
    """Steps between validations: --val-every, else a twentieth of the run (100 untimed)."""
    return config.val_every or (max(1, round(total / 20)) if total else 100)


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


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def prepare_run_dir(config: TrainConfig, resume: bool) -> tuple[Path, bool]:
    """The run folder, and whether there is a checkpoint to resume from; never overwrites."""
    run_dir = Path(config.output) if config.output else default_run_dir(config)
    if resume and not has_checkpoint(run_dir):  # killed before its first checkpoint
        print(f"{run_dir} has no checkpoint yet: starting it from the beginning")
        return run_dir, False
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(
            f"run folder {run_dir} already holds files; continue it with --resume {run_dir}, "
            "or choose another --output (nothing is overwritten)"
        )
    return run_dir, resume


def restore(run_dir: Path, model, optimizer, main_process: bool, save_best) -> RunState:
    """Load the last checkpoint into `model` and `optimizer`; the state to go on from. What a
    killed run may have left is tidied: log lines, temporary files, best weights not written."""
    weights, saved = load_checkpoint(run_dir)
    if "best_step" not in saved:
        raise ValueError(f"{run_dir} was trained by epochs with an older bioseg; start a new run")
    model.load_state_dict(weights)
    optimizer.load_state_dict(saved["optimizer"])
    state = RunState(saved["step"], saved["elapsed"], saved["best_dice"], saved["best_step"])
    if main_process:
        trim_metrics(run_dir / "metrics.csv", state.step)
        for leftover in run_dir.glob(".*.tmp"):
            leftover.unlink()
        if state.best_step == state.step:  # killed before the best was saved
            save_best()
        print(f"resuming {run_dir} after step {state.step} (best Dice {state.best_dice:.4f})")
    return state


def build_model(
    config: TrainConfig, spec: zoo.ModelSpec, num_classes: int, pretrained: bool, device
) -> zoo.SegmentationModel:
    """The model to train, on `device`, normalising its inputs with `spec`'s mean and std."""
    model = zoo.create_model(
        config.model,
        num_classes=num_classes,
        in_channels=config.in_channels,
        pretrained=pretrained,
        **config.model_kwargs,
    ).to(device)
    model.spec, model.scale = spec, config.scale
    if config.finetune:
        start_from(model, config.finetune)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


FINETUNED = ("model", "model_kwargs", "in_channels", "mean", "std", "scale", "threshold",
             "objects")  # fmt: skip
"""What a fine-tune takes from the weights it starts from (`--finetune`)."""


def finetune_settings(weights: str) -> dict[str, Any]:
    """The settings of a fine-tune of `weights`: their architecture, channels, normalization,
    scale, object target and threshold (explicit flags still win)."""
    config = zoo.from_pretrained(weights).pretrained_config
    settings = {key: config[key] for key in FINETUNED if key in config}
    settings["objects"] = bool(config.get("objects"))  # the base's target, whatever the masks
    size = config.get("input_size")
    if size:
        settings["image_size"] = int(size[0])
    return {**settings, "finetune": weights}


def start_from(model: zoo.SegmentationModel, weights: str) -> None:
    """Load the weights `model` is fine-tuned from; a ValueError when they do not fit it."""
    base = zoo.from_pretrained(weights)
    try:
        model.load_state_dict(base.state_dict())
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ValueError(
            f"--finetune {weights}: its weights do not fit the model trained here ({first}); "
            f"its {base.num_classes} class channel(s) must match the data set's classes"
        ) from None


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or AdamW over the parameters that train (a frozen encoder's are left out)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(trainable, lr=config.lr, weight_decay=config.weight_decay)


def write_settings(
    run_dir: Path, config: TrainConfig, plan: dict | None = None, note: dict | None = None
) -> None:
    """train_config.json (with `note`, how the run ended, once it has), and plan.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / "train_config.json", {**config.to_dict(), **({"note": note} if note else {})}
    )
    if plan:
        write_json(run_dir / "plan.json", plan)
    if not note:
        print(f"run folder: {run_dir}\nsettings: {config.to_dict()}")


@dataclasses.dataclass
class Run:
    """What the loop works with: the settings, the model (and the network it trains through,
    compiled or distributed), the data, and how the run is measured and ends."""

    config: TrainConfig
    run_dir: Path
    model: zoo.SegmentationModel
    net: nn.Module
    optimizer: torch.optim.Optimizer
    val_set: SegmentationDataset
    num_classes: int
    precision: str
    budget: Budget
    val_every: int
    main_process: bool
    save_best: Any


def train(config: TrainConfig, resume: bool = False, plan: dict | None = None) -> Path:
    """Run the training described by `config`; returns the run folder, where `plan` (the
    settings the plan derived, with its reasons) is kept as plan.json."""
    rank, world, device = setup_distributed()
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

    def save_best() -> None:  # the best weights, ready for from_pretrained and the Hub
        zoo.save_pretrained(
            model, run_dir, input_size=[config.image_size, config.image_size],
            threshold=config.threshold or 0.5, classes=list(source.class_names),
            dataset=source.kind, objects=config.objects,
        )  # fmt: skip

    state = restore(run_dir, model, optimizer, rank == 0, save_best) if resume else RunState()
    per_pass = steps_per_pass(len(train_set), config.batch_size, world)
    total = run_length(config, per_pass)
    seconds = parse_duration(config.time_budget) if config.time_budget else None
    net = torch.compile(model) if config.compile else model
    net = DistributedDataParallel(net) if world > 1 else net
    run = Run(
        config, run_dir, model, net, optimizer, val_set, num_classes, precision,
        Budget(total, seconds, spent=state.seconds), validation_interval(config, total),
        rank == 0, save_best,
    )  # fmt: skip
    if run.main_process:
        write_settings(run_dir, config, plan)
        print(f"data: {len(train_set)} training crops a pass ({per_pass} steps), "
              f"{len(val_set)} validation images; {total or 'unlimited'} steps in "
              f"{precision}, validated every {run.val_every}")  # fmt: skip
    loader = make_loader(train_set, config, range(state.step, total or 2**62), rank, world)
    state = train_steps(run, loader, state)
    if world > 1:
        dist.destroy_process_group()
    if run.main_process:
        note = {"ended_by": run.budget.ended_by(state.step), "steps": state.step,
                "seconds": round(run.budget.elapsed(), 1)}  # fmt: skip
        write_settings(run_dir, config, note=note)
        print(f"ended by the {note['ended_by']} after {state.step} steps, {note['seconds']:.0f} s")
        if num_classes == 1 and (run_dir / "config.json").is_file():
            tune_threshold(run_dir, val_set, precision, config.threshold)
        finish(config, run_dir, source)
    return run_dir


def train_steps(run: Run, loader: DataLoader, state: RunState) -> RunState:
    """Train from `state` until the budget ends the run, validating and checkpointing every
    `run.val_every` steps and at the end. The loss stays on the device and is read once per
    interval; the clock is shared between ranks every CHECK_EVERY steps."""
    config, device = run.config, next(run.model.parameters()).device
    loss_fn = DiceIoULoss(  # the object target's thin classes: scored over the batch
        config.dice_weight, config.iou_weight, check_values=False, batch=config.objects
    )
    scaler = grad_scaler(run.precision, device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    bar = tqdm(total=run.budget.steps or None, initial=state.step, disable=rank != 0,
               file=sys.stdout, dynamic_ncols=True, desc="steps")  # fmt: skip
    interval = {"loss": torch.zeros((), device=device), "seen": 0, "since": time.perf_counter()}
    run.budget.start()
    progress = shared_progress(run.budget, state.step, device)
    batches = iter(loader)
    while progress < 1:
        batch = next(batches, None)
        if batch is None:
            break
        for group in run.optimizer.param_groups:  # the cosine over the run: steps or time
            group["lr"] = config.lr * cosine(progress)
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
    seen, loss_sum = all_ranks_sum([interval["seen"], interval["loss"].item()],
                                   interval["loss"].device)  # fmt: skip
    threshold = run.config.threshold or 0.5
    val_dice, val_iou = validate(run.model, run.val_set, run.precision, run.num_classes, threshold)
    state.seconds = run.budget.elapsed()
    if run.main_process:
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", val_dice=f"{val_dice:.4f}",
                        img_s=f"{seen / seconds:.1f}", **_left(run.budget))  # fmt: skip
        append_csv(run.run_dir / "metrics.csv", {
            "step": state.step, "lr": f"{run.optimizer.param_groups[0]['lr']:.3g}",
            "train_loss": f"{loss_sum / max(seen, 1):.5f}", "val_dice": f"{val_dice:.5f}",
            "val_iou": f"{val_iou:.5f}", "images_per_s": f"{seen / seconds:.2f}",
            "seconds": f"{seconds:.1f}",
        })  # fmt: skip
        improved = val_dice > state.best_dice or math.isnan(val_dice)
        if improved:
            state.best_dice = state.best_dice if math.isnan(val_dice) else val_dice
            state.best_step = state.step
        # The checkpoint first: if the process dies before the best weights are written, the
        # resumed run writes them from this checkpoint (best_step == step).
        save_checkpoint(run.run_dir, state.step, run.model.state_dict(), {
            "optimizer": run.optimizer.state_dict(), "step": state.step,
            "elapsed": state.seconds, "best_dice": state.best_dice, "best_step": state.best_step,
        })  # fmt: skip
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
    found = (f"the nearest 0.5 within {F1_TOLERANCE} of the best validation F1, "
             f"{curve.best_f1:.4f} at {curve.best_threshold:.2f}")  # fmt: skip
    if explicit:
        print(f"threshold {explicit:.2f} kept (--threshold, or the model --finetune starts "
              f"from); the validation images' would be {tuned:.2f} ({found})")  # fmt: skip
        return
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text())
    write_json(config_file, {**config, "threshold": tuned, "threshold_from": "validation"})
    print(f"threshold {tuned:.2f} ({found})")


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

        from trainers.push import push_run, push_space

        token = get_token()  # the command line's own login: never a server's
        url = push_run(run_dir, config.push_to_hub, token=token, space_id=config.space or None)
        print(f"published: {url}")
        if config.space:
            print(f"space: {push_space(config.push_to_hub, config.space, token=token)}")


def main(argv: list[str] | None = None) -> None:
    """The command line: a mistake in its input ends it with one `error:` line."""
    with exit_on_user_error():
        run_command(argv)


def run_command(argv: list[str] | None = None) -> Path:
    """Train as the command line `argv` says; the run folder. A mistake in the input is a
    ValueError, FileNotFoundError or KeyError (`trainers.cli.USER_ERRORS`) naming it."""
    parser = build_parser("python -m trainers.train", __doc__.splitlines()[0], epilog=__doc__)
    parser.add_argument(
        "--plan",
        choices=["auto", "none"],
        help="auto (the default, but for --preset and --config, which are whole recipes): "
        "derive the model and its width, crop size, crops per image, batch, precision, steps, "
        "validation interval, normalization and workers from the data set and this machine's "
        "timed speed (saved as plan.json; explicit flags win); none: the settings' defaults",
    )
    args = parser.parse_args(argv)
    base, plan = None, None
    if args.resume:
        base = load_config_file(args.resume / "train_config.json")
        base["output"] = str(args.resume)
    elif getattr(args, "finetune", None):
        base = finetune_settings(args.finetune)
    elif (args.plan or ("none" if args.preset or args.config else "auto")) == "auto":
        if not getattr(args, "data", None):
            parser.error("--data KIND:PATH is required, e.g. --data drive:../shared/data/DRIVE")
        from trainers.planning import auto_plan, planned_settings

        plan = auto_plan(args)
        base = planned_settings(plan, getattr(args, "in_channels", plan["in_channels"]))
    config = resolve(args, base)
    if not config.data:
        parser.error("--data is required, e.g. --data drive:../shared/data/DRIVE")
    if plan:
        from trainers.planning import check_budget

        check_budget(config, plan)
    return train(config, resume=args.resume is not None, plan=plan)


if __name__ == "__main__":
    main()
