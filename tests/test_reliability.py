"""Reliability: a killed run resumes, pickles are refused, odd plugins cannot take things down."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_train import disc_dataset, run_args
from trainers.fit import checkpoint
from trainers.train import main


def steps_logged(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


FIVE_INTERVALS = ["--steps", "70", "--val-every", "14", "--no-evaluate", "--image-size", "48"]


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_run_killed_mid_interval_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data = disc_dataset(tmp_path / "data", count=40, size=64)
    run = tmp_path / "run"
    args = run_args(data, run, *FIVE_INTERVALS)
    process = subprocess.Popen(
        [sys.executable, "-m", "trainers.train", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = run / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 300
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next interval
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    weights, state = checkpoint.load_checkpoint(run)  # a complete checkpoint, never half-written
    done = state["step"]
    assert latest.read_text() == f"step-{done}" and 14 <= done < 70
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    main(["--resume", str(run)])
    assert steps_logged(run) == [14, 28, 42, 56, 70]  # nothing lost past the kill, no repeat
    assert latest.read_text() == "step-70"
    assert not list(run.glob(".*.tmp")) and not list((run / "checkpoints").glob(".step-*"))
    # The resumed run ends exactly where an uninterrupted one does (deterministic, on the CPU).
    straight = tmp_path / "straight"
    main(run_args(data, straight, *FIVE_INTERVALS))
    resumed, _ = checkpoint.load_checkpoint(run)
    uninterrupted, _ = checkpoint.load_checkpoint(straight)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_resume_recovers_what_a_kill_between_two_writes_left(tmp_path: Path) -> None:
    data = disc_dataset(tmp_path / "data", count=6, size=48)
    run = tmp_path / "run"
    main(run_args(data, run, "--steps", "1", "--no-evaluate"))
    # Killed after the checkpoint of its best step, before the best weights were written:
    (run / "model.safetensors").unlink()
    main(["--resume", str(run)])
    best = load_file(run / "model.safetensors")
    last, state = checkpoint.load_checkpoint(run)
    assert state["best_step"] == 1 and all(torch.equal(best[k], last[k]) for k in last)
    # Killed before its first checkpoint: --resume starts it from the beginning.
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.csv").unlink()
    main(["--resume", str(run)])
    assert steps_logged(run) == [1] and checkpoint.has_checkpoint(run)


class Payload:
    """Pickled, it would run `touch` when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_payload_is_refused_and_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zoo

    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"features.0.weight": Payload(marker)}, checkpoints / "vgg16-397923af.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(zoo.PretrainedWeightsError, match="not a plain state dict"):
        zoo.create_model("vgg16_fcn", pretrained=True)
    assert not marker.exists()


def test_plugin_failing_at_build_time_is_reported_clearly(run_python, tmp_path: Path) -> None:
    out = run_python(
        "import zoo\n"
        "@zoo.register_model('explodes', summary='x')\n"
        "def build(**kw):\n    raise RuntimeError('CUDA kernel missing')\n"
        "try:\n    zoo.create_model('explodes')\n"
        "except zoo.ModelBuildError as e:\n    print(e)\n"
        "print(len(zoo.list_models()) > 5)\n"
    ).stdout.splitlines()
    assert out == [
        "building model 'explodes' (runtime) failed: RuntimeError: CUDA kernel missing",
        "True",
    ]
