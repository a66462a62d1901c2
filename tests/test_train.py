"""The trainer: settings, checkpoints, a real run, resume, DDP on two CPU processes, evaluation."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import zoo
from tests.conftest import REPO
from trainers.fit import checkpoint
from trainers.fit.average import WeightAverage
from trainers.fit.settings import PRESETS, TrainConfig, build_parser, load_config_file, resolve
from trainers.hub.model_card import run_card
from trainers.train import main
from zoo._files import atomic_write

TINY_MODEL = [
    "--model",
    "timm/mobilenetv3_large_100",
    "--model-kwargs",
    '{"decoder_channels": [8]}',
]


def disc_dataset(root: Path, count: int = 6, size: int = 48) -> Path:
    """images/ and masks/ of bright discs on noise, split into train/ and test/ folders."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for index in range(count):
        split = "test" if index >= count - 2 else "train"
        (cy, cx), r = rng.integers(12, size - 12, 2).tolist(), int(rng.integers(5, 10))
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = rng.normal(60, 20, (size, size, 3)) + mask[..., None] * 120
        for kind, array in (("images", image.clip(0, 255)), ("masks", mask * 255)):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8)).save(folder / f"disc{index}.png")
    return root


def run_args(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        *TINY_MODEL,
        "--data", f"folder:{data}",
        "--output", str(output),
        "--image-size", "32",
        "--batch-size", "2",
        "--workers", "0",
        "--val-fraction", "0.25",
        "--deterministic",
        "--plan", "none",
        *extra,
    ]  # fmt: skip


def test_settings_precedence_and_rejection(tmp_path: Path) -> None:
    parser = build_parser("t", "t")
    config = resolve(parser.parse_args(["--preset", "report", "--epochs", "3", "--data", "x:y"]))
    assert (config.model, config.batch_size, config.image_size) == ("vgg16_fcn", 128, 224)
    assert config.epochs == 3  # an explicit flag beats the preset
    assert config.lr == PRESETS["report"]["lr"] == 1e-3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochs": 2, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match=r"bad.json: unknown setting\(s\) learning_rate"):
        load_config_file(bad)
    bad.write_text(json.dumps({"epochs": "two"}))
    with pytest.raises(ValueError, match="epochs must be int, got str 'two'"):
        load_config_file(bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"ema must be a decay in \[0, 1\), 0 for none, got 1.0"):
        TrainConfig(ema=1.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-such-flag", "1"])


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "weights.safetensors"
    atomic_write(target, lambda tmp: save_file({"w": torch.ones(2)}, str(tmp)))

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert torch.equal(load_file(target)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_checkpoints_keep_only_the_latest_complete_one(tmp_path: Path) -> None:
    for step in (100, 200):
        state = {"optimizer": {}, "best_dice": 0.1 * step / 100}
        checkpoint.save_checkpoint(tmp_path, step, {"w": torch.full((2,), step)}, state)
    assert (tmp_path / "checkpoints" / "LATEST").read_text() == "step-200"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", "step-200"]
    weights, state = checkpoint.load_checkpoint(tmp_path)
    assert torch.equal(weights["w"], torch.full((2,), 200)) and state["step"] == 200
    assert state["best_dice"] == pytest.approx(0.2)


def read_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_run_writes_weights_config_metrics_and_evaluation(tmp_path: Path, capsys) -> None:
    data = disc_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(run_args(data, run, "--steps", "2", "--val-every", "1"))
    out = capsys.readouterr().out
    assert "2/2" in out and "img_s=" in out  # the progress bar
    assert [row["step"] for row in read_metrics(run)] == ["1", "2"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "timm/mobilenetv3_large_100" and config["num_classes"] == 1
    assert config["classes"] == ["background", "foreground"]
    assert json.loads((run / "train_config.json").read_text())["steps"] == 2
    assert (run / "model.safetensors").is_file()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["n_images"] == 2 and summary["split"] == "test"  # values: the test below
    assert Image.open(run / "eval" / "grid.png").size[0] > 4 * 48  # four panels an image
    assert Image.open(run / "eval" / "pr_curve.png").format == "PNG"
    with (run / "eval" / "per_image.csv").open() as handle:
        assert {row["id"] for row in csv.DictReader(handle)} == {"disc4", "disc5"}
    with pytest.raises(SystemExit):  # a second run into the same folder refuses to overwrite
        main(run_args(data, run, "--steps", "1"))
    assert "already holds files" in capsys.readouterr().err


def test_resume_with_more_steps_extends_a_finished_run(tmp_path: Path) -> None:
    """The cosine's first step is the same for 1 and 2 steps, and each step's batch and random
    draws are fixed by the seed and the step, so the extended run must match a 2-step run
    exactly (test_reliability kills and resumes a run)."""
    data = disc_dataset(tmp_path / "data")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(run_args(data, straight, "--steps", "2", "--val-every", "1", "--no-evaluate"))
    main(run_args(data, resumed, "--steps", "1", "--val-every", "1", "--no-evaluate"))
    main(["--resume", str(resumed), "--steps", "2"])
    assert [row["step"] for row in read_metrics(resumed)] == ["1", "2"]
    assert read_metrics(resumed)[1]["val_dice"] == read_metrics(straight)[1]["val_dice"]
    a, _ = checkpoint.load_checkpoint(straight)
    b, _ = checkpoint.load_checkpoint(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_weight_average_follows_the_model_with_a_warmed_up_decay() -> None:
    """Decay 0.9, warmed up as min(0.9, (1 + n) / (10 + n)): the average of a weight at 0 moving
    to 1 is 1 - 2/11 after one update and 1 - (2/11)(3/12) after two; BatchNorm's integer
    count is copied, not averaged."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    torch.nn.init.zeros_(model[0].weight)
    average = WeightAverage(model, decay=0.9)
    model[0].weight.data.fill_(1.0)
    model[1].num_batches_tracked.fill_(7)
    average.update()
    assert average.model[0].weight.item() == pytest.approx(1 - 2 / 11)
    assert average.model[1].num_batches_tracked.item() == 7
    average.update()
    assert average.model[0].weight.item() == pytest.approx(1 - (2 / 11) * (3 / 12))
    assert model[0].weight.item() == 1.0  # the model itself is untouched
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(model, decay=1.0)


def test_an_ema_run_validates_and_saves_the_average_and_resumes_it(
    tmp_path: Path, monkeypatch
) -> None:
    """With --ema, validation scores the average (no gradients) and the best weights are the
    average, not the last step's (kept in the checkpoint); a run resumed after step 1 ends with
    the same average as a 2-step run. Validation is scripted to improve every time."""
    import trainers.fit.loop as loop

    scored, scores = [], iter(np.linspace(0.1, 0.9, 9))

    def improving(model, *args):
        scored.append(model)
        return float(next(scores)), 0.0

    monkeypatch.setattr(loop, "validate", improving)
    data = disc_dataset(tmp_path / "data")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--val-every", "1", "--no-evaluate", "--ema", "0.9", "--lr", "0.05")
    main(run_args(data, straight, "--steps", "2", *common))
    main(run_args(data, resumed, "--steps", "1", *common))
    main(["--resume", str(resumed), "--steps", "2"])
    assert len(scored) == 4
    assert not any(p.requires_grad for model in scored for p in model.parameters())
    last, state = checkpoint.load_checkpoint(straight)
    averaged = state["average"]["weights"]
    assert state["average"]["updates"] == 2
    assert any(not torch.equal(averaged[k], last[k]) for k in last)
    best_straight = load_file(straight / "model.safetensors")
    best_resumed = load_file(resumed / "model.safetensors")
    assert all(torch.equal(best_straight[k], averaged[k]) for k in best_straight)
    assert all(torch.equal(best_straight[k], best_resumed[k]) for k in best_straight)


def test_batch_dice_pools_the_loss_over_the_batch(tmp_path: Path, monkeypatch) -> None:
    """--batch-dice gives the loop the loss pooled over the batch (its values are checked by
    hand in test_losses), --no-batch-dice the loss of each crop."""
    import trainers.fit.loop as loop

    pooled, real = [], loop.DiceIoULoss
    monkeypatch.setattr(
        loop, "DiceIoULoss", lambda *a, **k: pooled.append(k["batch"]) or real(*a, **k)
    )
    data = disc_dataset(tmp_path / "data")
    for flag in ("--no-batch-dice", "--batch-dice"):
        main(run_args(data, tmp_path / flag, "--steps", "1", "--no-evaluate", flag))
    assert pooled == [False, True]


def test_the_config_file_sits_between_the_preset_and_the_flags(tmp_path: Path) -> None:
    settings = tmp_path / "mine.json"
    settings.write_text(json.dumps({"lr": 0.01, "batch_size": 4, "epochs": 7}))
    parser = build_parser("t", "t")
    argv = ["--preset", "report", "--config", str(settings), "--epochs", "3", "--data", "x:y"]
    config = resolve(parser.parse_args(argv))
    assert config.model == PRESETS["report"]["model"]  # the preset, where nothing overrides it
    assert (config.lr, config.batch_size) == (0.01, 4)  # the file beats the preset
    assert config.epochs == 3  # the flag beats the file


def test_the_best_step_is_kept_not_the_last(tmp_path: Path, monkeypatch) -> None:
    """Validation Dice 0.5, 0.7, 0.6 (scripted): model.safetensors holds step 2's weights."""
    import trainers.fit.loop as train_module

    scores = iter([(0.5, 0.4), (0.7, 0.6), (0.6, 0.5)])
    monkeypatch.setattr(train_module, "validate", lambda *args: next(scores))
    by_epoch = {}
    save = train_module.save_checkpoint

    def recording(run_dir, step, weights, state):
        by_epoch[step] = {k: v.clone() for k, v in weights.items()}
        save(run_dir, step, weights, state)

    monkeypatch.setattr(train_module, "save_checkpoint", recording)
    run = tmp_path / "run"
    data = disc_dataset(tmp_path / "data")
    main(run_args(data, run, "--steps", "3", "--val-every", "1", "--no-evaluate"))
    kept = load_file(run / "model.safetensors")
    assert all(torch.equal(kept[k], by_epoch[2][k]) for k in kept)
    assert not all(torch.equal(kept[k], by_epoch[3][k]) for k in kept)  # the last differs
    assert [row["val_dice"] for row in read_metrics(run)] == ["0.50000", "0.70000", "0.60000"]


DDP_SPY = """
import json, os, sys
from safetensors.torch import save_file
import trainers.fit.loop as loop
import trainers.train as train

rank, out, models, seen = os.environ["RANK"], sys.argv[1], [], []


class Recorded:  # the loader's place: records the ids of each batch this rank trains on
    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            seen.extend(batch["id"])
            yield batch


def kept(*args):
    models.append(build(*args))
    return models[-1]


def recorded(*args):
    return Recorded(make_loader(*args))


build, loop.build_model = loop.build_model, kept
make_loader, loop.make_loader = loop.make_loader, recorded
train.main(sys.argv[2:])
parameters = {name: p.detach().contiguous() for name, p in models[0].named_parameters()}
save_file(parameters, f"{out}/weights-{rank}.safetensors")
open(f"{out}/ids-{rank}.json", "w").write(json.dumps(seen))
"""


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    """Two CPU processes: each trains on its own half of the images, both end with the same
    parameters (batch-norm statistics are each rank's own, as DDP leaves them), and rank 0
    alone writes the run folder."""
    data = disc_dataset(tmp_path / "data", count=10)
    run, spy = tmp_path / "ddp", tmp_path / "spy.py"
    spy.write_text(DDP_SPY)
    steps = ["--steps", "4", "--val-every", "2", "--no-evaluate"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", "29517", str(spy), str(tmp_path),
               *run_args(data, run, *steps)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run)
    assert [row["step"] for row in rows] == ["2", "4"]  # rank 0 alone writes
    assert result.stdout.count("run folder:") == 1
    assert (run / "checkpoints" / "LATEST").read_text() == "step-4"
    ids = [json.loads((tmp_path / f"ids-{rank}.json").read_text()) for rank in (0, 1)]
    # 6 training images (2 held out for validation): 3 per rank and pass, one batch of 2 each
    assert len(ids[0]) == len(ids[1]) == 8
    for step in range(4):  # within a pass (one step here), the ranks see different images
        assert not set(ids[0][2 * step : 2 * step + 2]) & set(ids[1][2 * step : 2 * step + 2])
    weights = [load_file(tmp_path / f"weights-{rank}.safetensors") for rank in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def class_map_dataset(root: Path, palette: bool) -> Path:
    """Three classes (background, ring, core) as integer maps or RGB colours, with classes.json."""
    colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    yy, xx = np.mgrid[:40, :40]
    for index in range(6):
        split = "test" if index >= 4 else "train"
        radius = np.hypot(yy - 20 - index, xx - 20)
        labels = np.where(radius < 6, 2, np.where(radius < 12, 1, 0)).astype(np.uint8)
        image = np.stack([labels * 80 + 20] * 3, axis=-1).astype(np.uint8)
        mask = np.array(colours, np.uint8)[labels] if palette else labels
        for kind, array in (("images", image), ("masks", mask)):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / kind / f"ring{index}.png")
    spec = {"classes": ["background", "ring", "core"]}
    if palette:
        spec["palette"] = {",".join(map(str, c)): i for i, c in enumerate(colours)}
    (root / "classes.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize("palette", [False, True])
def test_multiclass_run_from_class_maps_or_a_palette(tmp_path: Path, palette: bool) -> None:
    data = class_map_dataset(tmp_path / "data", palette)
    run = tmp_path / "run"
    main(run_args(data, run, "--steps", "1"))
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 3 and config["classes"] == ["background", "ring", "core"]
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["metrics"]["dice"]["n"] == 2 * 2  # two test images, two foreground classes
    assert set(summary["per_class"]) == {"ring", "core"}
    card = run_card(run, "owner/rings")
    assert "Per class (mean over images):" in card and "| ring |" in card and "| core |" in card
    with (run / "eval" / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((row["id"], row["class"]) for row in rows) == [
        ("ring4", "1"),
        ("ring4", "2"),
        ("ring5", "1"),
        ("ring5", "2"),
    ]  # one row per test image and foreground class, background left out


def test_evaluation_gives_each_image_s_dice_as_computed_by_hand(tmp_path: Path) -> None:
    """The bundled nuclei U-Net on the two committed DSB 2018 examples (a folder data set): each
    row of per_image.csv is the Dice of its mask at the saved threshold, computed here with
    numpy from `predict` (2|A and B| / (|A| + |B|)), the summary their mean and the pooled
    figure that of all pixels; a model that predicted nothing would score 0."""
    from trainers.data import read_image, read_mask
    from trainers.evaluate import evaluate

    examples = REPO / "examples" / "dsb2018"
    for kind in ("images", "masks"):
        (tmp_path / "data" / "test" / kind).mkdir(parents=True)
    expected, inter, total = {}, 0, 0
    model = zoo.from_pretrained(REPO / "weights" / "dsb2018-unet")
    threshold = model.pretrained_config["threshold"]
    for image_path in sorted(examples.glob("*-*[0-9a-f].png")):
        shutil.copy(image_path, tmp_path / "data" / "test" / "images" / image_path.name)
        mask_path = image_path.with_name(image_path.stem + "_mask.png")
        shutil.copy(mask_path, tmp_path / "data" / "test" / "masks" / image_path.name)
        image = torch.from_numpy(read_image(image_path)).permute(2, 0, 1)[None]
        pred = model.predict(image)[0, 0].numpy() > threshold
        target = read_mask(mask_path)
        both = int((pred & target).sum())
        expected[image_path.stem] = 2 * both / (pred.sum() + target.sum())
        inter, total = inter + both, total + int(pred.sum() + target.sum())
    summary = evaluate(str(REPO / "weights" / "dsb2018-unet"), f"folder:{tmp_path / 'data'}",
                       output=tmp_path / "eval")  # fmt: skip
    with (tmp_path / "eval" / "per_image.csv").open() as handle:
        found = {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}
    assert found == pytest.approx(expected, abs=1e-9) and len(found) == 2
    assert min(found.values()) > 0.8  # the examples' Dice, as the demo shows them
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(np.mean(list(expected.values())))
    assert summary["pooled"]["dice"] == pytest.approx(2 * inter / total)
