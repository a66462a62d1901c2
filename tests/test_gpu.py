"""The GPU path: a step at each precision (bf16; fp16 with a GradScaler), torch.compile with
channels_last, validation on the device, torchrun over NCCL with two GPUs. Skipped without
CUDA; `BIOSEG_GPU_TEST_DEVICE=cpu` runs what a CPU can of it (benchmarks/gpu_check.py
--dry-run, in CI), so the checks cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests.conftest import REPO
from tests.test_train import disc_dataset, run_args
from trainers.fit.losses import DiceIoULoss
from trainers.fit.steps import grad_scaler, train_step
from trainers.scores.scoring import class_map, predict_probabilities

DEVICE = torch.device(os.environ.get("BIOSEG_GPU_TEST_DEVICE", "cuda"))
CUDA = DEVICE.type == "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        CUDA and not torch.cuda.is_available(),
        reason="needs a CUDA device (BIOSEG_GPU_TEST_DEVICE=cpu runs the CPU's share)",
    ),
]
PRECISIONS = ["bf16", "fp16", "fp32"] if CUDA else ["bf16", "fp32"]


def disc_batch(size: int = 64, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs on noise: images N x 3 x size x size (channels_last) and their masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([(yy - c) ** 2 + (xx - c) ** 2 < (size / 4) ** 2 for c in
                      rng.integers(size // 3, 2 * size // 3, count)])  # fmt: skip
    images = rng.normal(0, 0.3, (count, 3, size, size)) + masks[:, None] * 1.5
    x = torch.tensor(images, dtype=torch.float32, device=DEVICE)
    return x.contiguous(memory_format=torch.channels_last), torch.tensor(masks, device=DEVICE)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_steps_at_each_precision_lower_the_loss(precision: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model("unet", base_channels=8).to(DEVICE, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scaler = grad_scaler(precision, DEVICE)
    assert (scaler is not None) == (precision == "fp16")  # fp16's range needs the loss scaled
    images, masks = disc_batch()
    loss_fn = DiceIoULoss(check_values=False)
    losses = [
        float(train_step(model, images, masks, loss_fn, optimizer, scaler, precision))
        for _ in range(30)
    ]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


def test_compiled_channels_last_forward_matches_eager() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("unet", base_channels=8).to(DEVICE, memory_format=torch.channels_last)
    model.eval()
    images, _ = disc_batch()
    compiled = torch.compile(model)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(images), model(images), atol=1e-3, rtol=1e-3)


def test_validation_on_the_device_under_autocast_gives_the_cpu_s_mask() -> None:
    """The trainer validates on its device in its precision: the mask agrees with float32 on
    the CPU on at least 99.9 % of the pixels (the bundled nuclei model, its example image)."""
    from trainers.data import read_image

    model = zoo.from_pretrained(REPO / "weights" / "dsb2018-unet")
    image = torch.from_numpy(read_image(REPO / "examples/dsb2018/histology-a08166d9.png"))
    image = image.permute(2, 0, 1)
    reference = class_map(predict_probabilities(model, image), 0.5)
    model.to(DEVICE)
    for precision in PRECISIONS:
        pred = class_map(predict_probabilities(model, image, precision=precision), 0.5)
        assert (pred == reference).mean() >= 0.999, precision


@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_torchrun_with_two_gpus_over_nccl(tmp_path: Path) -> None:
    data = disc_dataset(tmp_path / "data", count=10)
    run = tmp_path / "ddp"
    steps = ["--steps", "4", "--val-every", "2", "--no-evaluate"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", "29527", "-m", "trainers.train",
               *run_args(data, run, *steps)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "LATEST").read_text() == "step-4"
