"""One optimizer step, at a precision, written once: the trainer's loop and the plan's timing
both take it.

    with autocast("bf16", device):       # bf16 autocast on CPU or CUDA; fp16 on CUDA; fp32: off
        ...
    loss = train_step(net, images, target, loss_fn, optimizer, scaler)
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to `precision` ("bf16", "fp16" or "fp32": none) on `device`'s type."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training needs a CUDA device; on the CPU use bf16 or fp32")
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (its small range needs the loss scaled); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def train_step(
    net: nn.Module,
    images: Tensor,
    target: Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    precision: str,
) -> Tensor:
    """Forward under autocast, the loss in float32, backward and step; the loss, detached (no
    host sync: it stays on the device until the caller reads it)."""
    with autocast(precision, images.device):
        logits = net(images)
    loss = loss_fn(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(
    model: str,
    model_kwargs: dict[str, Any],
    crop: int | tuple[int, ...],
    batch: int,
    precision: str,
    *,
    in_channels: int,
    num_classes: int,
    device: torch.device,
    steps: int = 3,
) -> float:
    """Seconds per training step (Adam, Dice + IoU loss) of `model` on random crops: the median
    of `steps` timed one by one after two of warm-up (the first runs pick their kernels). What
    the plan compares candidates by; out of GPU memory: infinity. `crop` is a square's side, or
    a patch's sides (D, H, W for a volume model)."""
    import zoo
    from trainers.fit.losses import DiceIoULoss

    net = zoo.create_model(model, num_classes=num_classes, in_channels=in_channels, **model_kwargs)
    sides = (crop, crop) if isinstance(crop, int) else tuple(crop)
    layout = torch.channels_last if len(sides) == 2 else torch.contiguous_format
    net = net.to(device, memory_format=layout)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.randn(batch, in_channels, *sides, device=device)
    images = images.contiguous(memory_format=layout)
    target = torch.randint(0, max(num_classes, 2), (batch, *sides), device=device)
    loss_fn, scaler = DiceIoULoss(check_values=False), grad_scaler(precision, device)
    seconds = []
    try:
        for _ in range(2 + steps):
            started = time.perf_counter()
            train_step(net, images, target, loss_fn, optimizer, scaler, precision)
            synchronize(device)
            seconds.append(time.perf_counter() - started)
    except torch.cuda.OutOfMemoryError:
        return float("inf")
    finally:
        del net, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return statistics.median(seconds[2:])
