"""The GPU check, in one command of at most 10 minutes on one H100-class GPU:

    python benchmarks/gpu_check.py                 # on a machine with a GPU
    python benchmarks/gpu_check.py --dry-run       # on the CPU at tiny sizes (CI), so it cannot rot

1. the `gpu`-marked tests (a bf16 step, an fp16 step with a GradScaler, torch.compile with
   channels_last, validation on the device; torchrun over NCCL when two GPUs are there);
2. the default DRIVE run (`python -m trainers.train --data drive:...`) under a 5-minute budget:
   its test F1 (pooled Dice) and its steps per second;
3. the peer, measured in the same call: a plain PyTorch loop of the same model, batch and crop
   (float32, default memory format, Adam, the same loss, a fixed batch already on the device),
   steps per second, beside bioseg's own step at its precision on the same batch.

Prints a table (Markdown) and writes it with the figures to --output (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zoo  # noqa: E402
from trainers.fit.losses import DiceIoULoss  # noqa: E402
from trainers.fit.steps import synchronize, time_step  # noqa: E402


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run `command` in the repository, its output shown; stop the check if it fails."""
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"gpu_check: {command[2] if len(command) > 2 else command} failed")


def plain_loop_seconds(plan: dict, device: torch.device, steps: int) -> float:
    """Seconds per step of the loop a user would write: the plan's model, batch and crop in
    float32 and the default memory format, Adam, the same loss, one batch on the device."""
    model = zoo.create_model(plan["model"], in_channels=plan["in_channels"],
                             **plan["model_kwargs"]).to(device)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceIoULoss()
    crop, batch = plan["image_size"], plan["batch_size"]
    images = torch.randn(batch, plan["in_channels"], crop, crop, device=device)
    target = torch.randint(0, 2, (batch, crop, crop), device=device)

    def step() -> None:
        loss = loss_fn(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def tiny_dataset(root: Path) -> str:
    from tests.test_train import disc_dataset

    return f"folder:{disc_dataset(root, count=8)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes (CI)")
    parser.add_argument("--data", default="drive:../shared/data/DRIVE")
    parser.add_argument("--budget", default="5m", help="the training run's --time-budget")
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "gpu-check.json")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("gpu_check: no CUDA device here; --dry-run runs it on the CPU")
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    tests_env = {"BIOSEG_GPU_TEST_DEVICE": "cpu"} if args.dry_run else {}
    run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py",
         "-p", "no:cacheprovider"], env=tests_env)  # fmt: skip
    data, budget, extra = args.data, args.budget, []
    if args.dry_run:  # a tiny set and model: the same commands, in seconds
        data, budget = tiny_dataset(scratch / "data"), "20s"
        extra = ["--model-kwargs", '{"base_channels": 4}', "--image-size", "32", "--workers", "0"]
    output = scratch / "run"
    run([sys.executable, "-m", "trainers.train", "--data", data, "--time-budget", budget,
         "--output", str(output), *extra])  # fmt: skip
    plan = json.loads((output / "plan.json").read_text())
    note = json.loads((output / "train_config.json").read_text())["note"]
    summary = json.loads((output / "eval" / "summary.json").read_text())
    steps = 3 if args.dry_run else 20
    plain = plain_loop_seconds(plan, device, steps)
    ours = time_step(plan["model"], plan["model_kwargs"], plan["image_size"], plan["batch_size"],
                     plan["precision"], in_channels=plan["in_channels"], num_classes=1,
                     device=device, steps=steps)  # fmt: skip
    figures = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)",
        "data": data, "budget": budget, "plan": {k: v for k, v in plan.items() if k != "note"},
        "run_steps": note["steps"], "run_seconds": note["seconds"],
        "run_steps_per_s": note["steps"] / note["seconds"],
        "test_pooled_dice": summary["pooled"]["dice"], "test_best_f1": summary.get("best_f1"),
        "bioseg_step_s": ours, "plain_step_s": plain,
    }  # fmt: skip
    rows = [
        "| figure | value |", "| --- | ---: |",
        f"| device | {figures['device']} |",
        f"| plan | {plan['model']} {plan['model_kwargs']}, {plan['image_size']} crops, batch "
        f"{plan['batch_size']}, {plan['precision']}, {plan['steps']} steps |",
        f"| run: steps in {budget} (with validation) | {note['steps']} in {note['seconds']:.0f} s "
        f"({figures['run_steps_per_s']:.2f} steps/s) |",
        f"| test F1 (pooled Dice) | {figures['test_pooled_dice']:.4f} |",
        f"| bioseg step, same batch | {ours * 1000:.1f} ms ({1 / ours:.2f} steps/s) |",
        f"| plain PyTorch loop, fp32 | {plain * 1000:.1f} ms ({1 / plain:.2f} steps/s) |",
        f"| bioseg / plain, steps per second | {plain / ours:.2f}x |",
    ]  # fmt: skip
    print("\n".join(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**figures, "table": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
