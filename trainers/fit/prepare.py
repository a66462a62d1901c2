"""What a training run is made of before its first step: the processes' seeds and kernels, the
precision, the run folder and its settings, the data sets and the loader, the model (or the
weights a fine-tune starts from) and the optimizer. `trainers.fit.loop` puts them together.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import zoo
from trainers.data import (
    SegmentationDataset,
    eval_transform,
    parse_spec,
    train_transform,
    train_val_split,
)
from trainers.data.sampling import SeededItems, StepBatches
from trainers.fit.checkpoint import has_checkpoint, write_json
from trainers.fit.settings import TrainConfig


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
    elif not val:  # --val-fraction 0 (a fine-tune on a few pairs): the training images' own Dice
        val = list(train)
        if rank == 0:
            print("no image held back: the Dice reported is the training images' own")
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
        len(train_set),
        config.batch_size,
        first=steps.start,
        last=steps.stop,
        seed=config.seed,
        rank=rank,
        world=world,
    )
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


FINETUNED = (
    "model",
    "model_kwargs",
    "in_channels",
    "mean",
    "std",
    "scale",
    "object_width",
    "threshold",
    "objects",
)
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
