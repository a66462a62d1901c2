"""Train a zoo model on a segmentation data set with Dice + IoU loss.

    python -m trainers.train --model timm/resnet18 --data drive:../shared/data/DRIVE --epochs 1
    python -m trainers.train --preset report --data isbi2012:../shared/data/ISBI2012-membrane
    torchrun --nproc-per-node 2 -m trainers.train --model timm/resnet34 --data ...   # DDP

Reads top to bottom: settings, data, model, loop (train, validate, checkpoint), evaluation, push.
On CUDA: bf16 autocast, channels_last and optional torch.compile; on the CPU: float32.
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
from torch.utils.data import DataLoader, DistributedSampler
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
from trainers.config import TrainConfig, build_parser, load_config_file, resolve
from trainers.data import (
    SegmentationDataset,
    eval_transform,
    parse_spec,
    train_transform,
    train_val_split,
)
from trainers.losses import DiceIoULoss

CSV_FIELDS = ["epoch", "lr", "train_loss", "val_dice", "val_iou", "images_per_s", "seconds"]
F1_TOLERANCE = 0.002  # a validation F1 this close to the best is as good as the best


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


def use_deterministic_algorithms() -> None:
    """Deterministic kernels where torch has them; a warning for the few it has not (such as
    bilinear upsampling's backward pass on CUDA) rather than an error."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.model.replace('/', '-')}"


def make_loaders(config: TrainConfig, spec: zoo.ModelSpec, world: int, rank: int):
    """Training and validation loaders, the number of classes and the class names."""
    source = parse_spec(config.data)
    splits = source.splits()
    train, val = splits["train"], splits.get("val") or []
    if not val and config.val_fraction > 0:
        train, val = train_val_split(train, config.val_fraction, seed=config.seed)
    binary = len(source.class_names) == 2  # one output channel, sigmoid
    common = {
        "in_channels": config.in_channels,
        "mask_mode": source.mask_mode,
        "palette": source.palette,
        "scale": config.scale,
    }
    norm = {"mean": spec.mean, "std": spec.std}
    train_set = SegmentationDataset(
        train,
        train_transform(config.image_size, **norm),
        patches_per_image=config.patches_per_image,
        **common,
    )
    val_set = SegmentationDataset(val, eval_transform(**norm), **common)
    for name, dataset in (("training", train_set), ("validation", val_set)):
        kept = dataset.keep_all()  # before the workers start: they inherit the decoded set
        if not kept and rank == 0:
            print(f"the {name} images are too large to keep decoded: read again for each crop")
    sampler = DistributedSampler(train_set, world, rank, seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed + rank)
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        generator=generator,
        drop_last=len(train_set) >= config.batch_size * world,
    )
    val_loader = DataLoader(val_set, batch_size=1, num_workers=config.workers)
    return train_loader, val_loader, (1 if binary else len(source.class_names)), source


@torch.inference_mode()
def validate(model, loader, device, num_classes: int, threshold: float) -> tuple[float, float]:
    """Mean Dice and IoU over the validation images, inside their regions of interest."""
    model.eval()
    dices, ious = [], []
    for batch in loader:
        logits = model(batch["image"].to(device)).float()
        if num_classes == 1:
            pred = (logits.sigmoid()[0, 0] > threshold).cpu().numpy()
            target = batch["mask"][0].numpy() == 1
        else:  # mean over the foreground classes
            pred = logits.argmax(1)[0].cpu().numpy()
            target = batch["mask"][0].numpy()
        roi = batch["roi"][0].numpy()
        rows = (
            [metrics.confusion(pred, target, roi)]
            if num_classes == 1
            else [metrics.confusion(pred == c, target == c, roi) for c in range(1, num_classes)]
        )
        dices.append(np.mean([metrics.dice(cm) for cm in rows]))
        ious.append(np.mean([metrics.iou(cm) for cm in rows]))
    model.train()
    return float(np.mean(dices)) if dices else math.nan, float(np.mean(ious)) if ious else math.nan


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
    if resume and not has_checkpoint(run_dir):  # killed in its first epoch: nothing to lose
        print(f"{run_dir} finished no epoch: starting it from the beginning")
        return run_dir, False
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(
            f"run folder {run_dir} already holds files; continue it with --resume {run_dir}, "
            "or choose another --output (nothing is overwritten)"
        )
    return run_dir, resume


def restore(run_dir: Path, model, optimizer, main_process: bool, save_best) -> dict[str, Any]:
    """Load the last checkpoint into `model` and `optimizer`; the loop's counters to go on
    with. What a killed run may have left is tidied: a log line, temporary files, and best
    weights not yet written."""
    weights, state = load_checkpoint(run_dir)
    model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    if main_process:
        trim_metrics(run_dir / "metrics.csv", state["epoch"])
        for leftover in run_dir.glob(".*.tmp"):
            leftover.unlink()
        if state.get("best_epoch") == state["epoch"]:  # killed before the best was saved
            save_best()
        print(
            f"resuming {run_dir} after epoch {state['epoch']} (best Dice {state['best_dice']:.4f})"
        )
    return {
        "epoch": state["epoch"] + 1,
        "step": state["step"],
        "elapsed": state["elapsed"],
        "best_dice": state["best_dice"],
        "best_epoch": state.get("best_epoch", 0),
    }


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
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


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


def train(config: TrainConfig, resume: bool = False, plan: dict | None = None) -> Path:
    """Run the training described by `config`; returns the run folder, where `plan` (the
    settings `--plan auto` derived, with its reasons) is kept as plan.json."""
    rank, world, device = setup_distributed()
    main_process = rank == 0
    seed_generators(config.seed + rank)
    if config.deterministic:
        use_deterministic_algorithms()
    run_dir, resume = prepare_run_dir(config, resume)
    config.output = str(run_dir)

    # Data and model; a normalization of the run's own replaces the model's, in its config too.
    spec = zoo.get_spec(config.model)
    if config.mean:
        spec = dataclasses.replace(spec, mean=tuple(config.mean), std=tuple(config.std))
    train_loader, val_loader, num_classes, source = make_loaders(config, spec, world, rank)
    model = build_model(config, spec, num_classes, config.pretrained and not resume, device)
    optimizer = make_optimizer(config, model)

    def save_best() -> None:  # the best weights, ready for from_pretrained and the Hub
        zoo.save_pretrained(
            model,
            run_dir,
            input_size=[config.image_size, config.image_size],
            threshold=config.threshold,
            classes=list(source.class_names),
            dataset=source.kind,
        )

    fresh = {"epoch": 1, "step": 0, "elapsed": 0.0, "best_dice": -1.0, "best_epoch": 0}
    run = restore(run_dir, model, optimizer, main_process, save_best) if resume else fresh
    seconds = parse_duration(config.time_budget) if config.time_budget else None
    budget = Budget(config.epochs, seconds, len(train_loader), spent=run["elapsed"])
    net = torch.compile(model) if config.compile else model
    net = DistributedDataParallel(net) if world > 1 else net
    if main_process:
        write_settings(run_dir, config, plan)
        print(f"data: {len(train_loader.dataset)} training, {len(val_loader.dataset)} validation")

    epoch, step = run["epoch"], run["step"]
    budget.start()
    while shared_progress(budget, step, device) < 1:
        step, figures = train_epoch(net, train_loader, optimizer, budget, config, epoch, step)
        if main_process and end_of_epoch(
            run_dir, model, optimizer, val_loader, device, num_classes, config,
            epoch=epoch, step=step, elapsed=budget.elapsed(), best=run, train_figures=figures,
        ):  # fmt: skip
            save_best()
        if world > 1:  # the others wait here, not inside the next gradient sync
            dist.barrier()
        epoch += 1
    if world > 1:
        dist.destroy_process_group()
    if main_process:
        note = {"ended_by": budget.ended_by(step), "steps": step,
                "seconds": round(budget.elapsed(), 1)}  # fmt: skip
        write_settings(run_dir, config, note=note)
        print(f"ended by the {note['ended_by']} after {step} steps, {note['seconds']:.0f} s")
        if num_classes == 1 and (run_dir / "config.json").is_file():
            tune_threshold(run_dir, val_loader, device)
        finish(config, run_dir, source)
    return run_dir


def train_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    budget: Budget,
    config: TrainConfig,
    epoch: int,
    step: int,
) -> tuple[int, dict[str, float]]:
    """One pass over `loader` (cut short when the budget runs out); the step reached, and the
    epoch's learning rate, loss and images per second over all processes."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = next(net.parameters()).device
    cuda = device.type == "cuda"
    # Shuffling, augmentation and dropout seeded by epoch and rank: a resumed run sees the
    # batches and draws of an uninterrupted one, on any number of processes.
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(config.seed + 1000 * epoch + rank)
    seed_generators(config.seed + 1000 * epoch + rank)
    # The loss sees every pixel, outside a region of interest too (DRIVE's black surround is
    # background a model must learn); the region of interest applies to the metrics.
    loss_fn = DiceIoULoss(config.dice_weight, config.iou_weight)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config.amp)
    net.train()
    started, seen, loss_sum = time.perf_counter(), 0, 0.0
    total = f"/{config.epochs}" if config.epochs else ""
    bar = tqdm(loader, desc=f"epoch {epoch}{total}", disable=rank != 0, file=sys.stdout,
               dynamic_ncols=True)  # fmt: skip
    for batch in bar:
        progress = shared_progress(budget, step, device)
        if progress >= 1:  # the time is up: this epoch ends here, validated as any other
            break
        for group in optimizer.param_groups:  # the cosine over the run: epochs or time
            group["lr"] = config.lr * cosine(progress)
        images = batch["image"].to(device, non_blocking=True)
        if cuda and config.channels_last:
            images = images.to(memory_format=torch.channels_last)
        target = batch["mask"].to(device, non_blocking=True)
        with autocast:
            logits = net(images)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        seen += len(images)
        loss_sum += loss.item() * len(images)
        rate = seen / (time.perf_counter() - started)  # this process's images per second
        left = {"left": budget.left()} if budget.seconds is not None else {}
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}", **left)
    seconds = time.perf_counter() - started
    seen, loss_sum = all_ranks_sum([seen, loss_sum], device)  # every rank's batches
    return step, {
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / max(seen, 1),
        "images_per_s": seen / seconds,
        "seconds": seconds,
    }


def end_of_epoch(
    run_dir: Path, model, optimizer, val_loader, device, num_classes: int, config: TrainConfig,
    *, epoch: int, step: int, elapsed: float, best: dict[str, Any], train_figures: dict,
) -> bool:  # fmt: skip
    """Validate, log the epoch's row in metrics.csv and write its checkpoint; True when the
    validation Dice is the best so far (`best` is updated), so the caller saves the weights."""
    val_dice, val_iou = validate(model, val_loader, device, num_classes, config.threshold)
    print(f"epoch {epoch}: val Dice {val_dice:.4f}, val IoU {val_iou:.4f}")
    append_csv(
        run_dir / "metrics.csv",
        {
            "epoch": epoch,
            "lr": f"{train_figures['lr']:.3g}",
            "train_loss": f"{train_figures['train_loss']:.5f}",
            "val_dice": f"{val_dice:.5f}",
            "val_iou": f"{val_iou:.5f}",
            "images_per_s": f"{train_figures['images_per_s']:.2f}",
            "seconds": f"{train_figures['seconds']:.1f}",
        },
    )
    improved = val_dice > best["best_dice"] or math.isnan(val_dice)
    if improved:
        best["best_dice"] = val_dice if not math.isnan(val_dice) else best["best_dice"]
        best["best_epoch"] = epoch
    # The checkpoint first: if the process dies before the best weights are written, the
    # resumed run writes them from this epoch's checkpoint (best_epoch == epoch).
    save_checkpoint(
        run_dir,
        epoch,
        model.state_dict(),
        {
            "optimizer": optimizer.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "best_dice": best["best_dice"],
            "best_epoch": best["best_epoch"],
        },
    )
    return improved


@torch.inference_mode()
def tune_threshold(run_dir: Path, loader: DataLoader, device: torch.device) -> None:
    """Save in config.json the threshold at which the best weights have their best pooled F1
    (Dice) on the validation images, to 0.01 as the app's slider shows it: of those within
    `F1_TOLERANCE` of the best F1, the nearest 0.5. Never chosen on the test split. Nothing
    changes without validation images or without foreground in them."""
    model = zoo.from_pretrained(run_dir).to(device).eval()
    scores, targets = [], []
    for batch in loader:
        probabilities = model(batch["image"].to(device)).float().sigmoid()[0, 0].cpu().numpy()
        roi = batch["roi"][0].numpy()
        scores.append(probabilities[roi])
        targets.append(batch["mask"][0].numpy()[roi] == 1)
    try:
        if not scores:
            raise ValueError("no validation images")
        curve = metrics.precision_recall_curve(np.concatenate(scores), np.concatenate(targets))
    except ValueError as error:  # no validation images, or no foreground in them
        print(f"threshold left at the configured one: {error}")
        return
    threshold = min(max(round(curve.threshold_near(0.5, F1_TOLERANCE), 2), 0.01), 0.99)
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text())
    write_json(config_file, {**config, "threshold": threshold, "threshold_from": "validation"})
    print(
        f"threshold {threshold:.2f} (the nearest 0.5 within {F1_TOLERANCE} of the best F1, "
        f"{curve.best_f1:.4f} at {curve.best_threshold:.2f}, on the validation images)"
    )


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

        token = get_token()
        url = push_run(run_dir, config.push_to_hub, token=token, space_id=config.space or None)
        print(f"published: {url}")
        if config.space:
            print(f"space: {push_space(config.push_to_hub, config.space, token=token)}")


def auto_plan(data: str) -> dict[str, Any]:
    """The settings `--plan auto` derives for `data` on this machine, printed with a reason
    each; under "note" (which --config ignores) the reasons and the fingerprint."""
    from trainers.data.fingerprint import describe, fingerprint
    from trainers.plan import Hardware, make_plan

    measured = fingerprint(parse_spec(data))
    settings, reasons = make_plan(measured, Hardware.detect())
    print("fingerprint:\n  " + "\n  ".join(describe(measured)))
    print("plan (explicit flags win):\n  " + "\n  ".join(reasons))
    return {**settings, "note": {"reasons": reasons, "fingerprint": describe(measured)}}


def planned_settings(plan: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """The plan's settings; with another channel count given, its statistics averaged to it."""
    settings = {key: value for key, value in plan.items() if key != "note"}
    if in_channels != plan["in_channels"]:
        settings["mean"], settings["std"] = (
            [sum(values) / len(values)] * in_channels for values in (plan["mean"], plan["std"])
        )
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = build_parser("python -m trainers.train", __doc__.splitlines()[0])
    parser.add_argument(
        "--plan",
        choices=["auto"],
        help="derive crop size, crops per image, batch size, model width, normalization and "
        "workers from the data set and this machine (saved in the run as plan.json)",
    )
    args = parser.parse_args(argv)
    try:
        base, plan = None, None
        if args.resume:
            base = load_config_file(args.resume / "train_config.json")
            base["output"] = str(args.resume)
        elif args.plan:
            if not getattr(args, "data", None):
                parser.error("--plan auto needs --data KIND:PATH")
            plan = auto_plan(args.data)
            base = planned_settings(plan, getattr(args, "in_channels", plan["in_channels"]))
        config = resolve(args, base)
        if not config.data:
            parser.error("--data is required, e.g. --data drive:../shared/data/DRIVE")
        train(config, resume=args.resume is not None, plan=plan)
    except (ValueError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
