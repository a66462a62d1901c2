"""Checkpoints that are never half-written: a temporary file or folder, then a rename.

A run folder holds the best weights (`model.safetensors`, by validation Dice) beside
`config.json`, and `checkpoints/step-N/` (weights + optimizer state, step, seconds spent and
best Dice) for the last validation, named by `checkpoints/LATEST`. Each is complete or absent,
whenever the process dies.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from zoo._files import atomic_write
from zoo._hub import WEIGHTS_NAME

STATE = "state.pt"
LATEST = "LATEST"


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def save_checkpoint(run_dir: Path, step: int, weights: dict, training_state: dict) -> Path:
    """Write checkpoints/step-N as a whole, point LATEST at it, then drop older ones."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".step-{step}."))
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / WEIGHTS_NAME
        )
        torch.save({**training_state, "step": step}, tmp / STATE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(folder / LATEST, lambda path: path.write_text(final.name))
    for old in [*folder.glob("step-*"), *folder.glob(".step-*")]:  # older, or half-written
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop rows of `metrics.csv` past `last_step` (a run killed after logging, before saving)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [
        line
        for line in lines[1:]
        if line.split(",", 1)[0].isdigit()
        and int(line.split(",", 1)[0]) <= last_step
        and line.endswith("\n")
    ]
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` has a checkpoint, so that it can be resumed."""
    return (run_dir / "checkpoints" / LATEST).is_file()


def load_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and training state of the last checkpoint of `run_dir`."""
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no checkpoint to resume from ({pointer} is missing): "
            "was it started with python -m trainers.train, and did it reach a validation?"
        )
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    weights = load_file(folder / WEIGHTS_NAME)
    state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    return weights, state
