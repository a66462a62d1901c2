"""Training that configures itself: the fingerprint, the plan's rules, the time budget, crops
taken before augmenting, data sets decoded once, and the validation threshold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.budget import Budget, cosine, parse_duration
from trainers.data import parse_spec, train_transform
from trainers.data.dataset import SegmentationDataset
from trainers.data.fingerprint import Fingerprint, fingerprint
from trainers.plan import Hardware, make_plan
from trainers.train import main


def squares_dataset(root: Path) -> Path:
    """Three 60x80 training images: a 10x10 and a 20x20 white square on grey 100, one image
    empty; one test image. Known: 500 of 14,400 pixels foreground, one empty target."""
    for split, count in (("train", 3), ("test", 1)):
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            mask = np.zeros((60, 80), dtype=np.uint8)
            if index == 0:
                mask[5:15, 5:15] = 255  # 10 x 10
                mask[30:50, 40:60] = 255  # 20 x 20
            image = np.where(mask[..., None] > 0, 255, 100).repeat(3, axis=2).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"s{index}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"s{index}.png")
    return root


def test_the_fingerprint_of_a_set_with_known_answers(tmp_path: Path) -> None:
    f = fingerprint(parse_spec(f"folder:{squares_dataset(tmp_path)}"))
    assert f.images == 3 and f.heights == (60, 60, 60) and f.widths == (80, 80, 80)
    assert f.channels == 3 and f.bits == 8 and f.empty == 2
    assert f.foreground == {"foreground": pytest.approx(500 / 14_400)}
    # By area, the 20x20 square (400 px) holds most of the class: its width (twice the largest
    # inscribed radius, 10 px from its centre pixels to the background) and diameter rule.
    assert f.width["foreground"] == pytest.approx(20.0, abs=1.5)
    assert f.diameter["foreground"] == pytest.approx(2 * math.sqrt(400 / math.pi))
    mean = (500 * 1.0 + 13_900 * 100 / 255) / 14_400
    assert f.mean == pytest.approx((mean,) * 3, abs=1e-4)


def fingerprint_with(width: float, side: int = 512, channels: int = 3) -> Fingerprint:
    return Fingerprint(
        images=10, heights=(side, side, side), widths=(side, side, side), channels=channels,
        bits=8, mean=(0.5,) * channels, std=(0.2,) * channels, foreground={"x": 0.1},
        width={"x": width}, diameter={"x": width}, empty=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("width", "crop"),
    [(32.0, 128), (32.1, 192), (48.0, 192), (48.1, 256), (70.0, 256), (200.0, 256)],
)
def test_the_crop_holds_four_object_widths_up_to_what_the_cpu_affords(
    width: float, crop: int
) -> None:
    settings, reasons = make_plan(fingerprint_with(width), Hardware(threads=2))
    assert settings["image_size"] == crop
    assert any(line.startswith(f"crop {crop}x{crop}") for line in reasons)
    assert any("reduced resolution" in line for line in reasons) == (width * 4 > 256)


def test_the_crop_fits_the_images_and_a_gpu_affords_larger_ones() -> None:
    assert make_plan(fingerprint_with(70.0, side=200), Hardware(threads=2))[0]["image_size"] == 192
    assert make_plan(fingerprint_with(70.0, side=100), Hardware(threads=2))[0]["image_size"] == 128
    gpu, _ = make_plan(fingerprint_with(100.0, side=1000), Hardware(threads=8, gpu_memory_gb=80))
    assert gpu["image_size"] == 512 and gpu["model_kwargs"] == {"base_channels": 32}
    assert gpu["batch_size"] == 40 and gpu["workers"] == 8  # 80 GB x 2 x (256 / 512)^2


@pytest.mark.parametrize(("side", "patches"), [(128, 1), (129, 2), (256, 4), (600, 16)])
def test_crops_per_image_cover_a_median_image_up_to_sixteen(side: int, patches: int) -> None:
    settings, _ = make_plan(fingerprint_with(10.0, side=side), Hardware(threads=2))
    assert settings["image_size"] == 128 and settings["patches_per_image"] == patches


def test_cpu_batch_workers_and_normalization_follow_the_rules() -> None:
    small, _ = make_plan(fingerprint_with(10.0, channels=1), Hardware(threads=2))
    assert small["batch_size"] == 8 and small["workers"] == 1 and small["in_channels"] == 1
    assert small["mean"] == [0.5] and small["std"] == [0.2]
    large, _ = make_plan(fingerprint_with(60.0), Hardware(threads=16))
    assert large["image_size"] == 256 and large["batch_size"] == 4 and large["workers"] == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20", "m20", "20 minutes", "0s", "2d"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="time budget"):
        parse_duration(text)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_time_budget_spans_the_cosine_and_ends_the_run() -> None:
    clock = FakeClock()
    budget = Budget(steps=0, seconds=100, clock=clock)
    budget.start()
    assert budget.progress(0) == 0 and not budget.over(0) and budget.left() == "1:40"
    clock.now += 50
    assert budget.progress(5) == 0.5 and cosine(budget.progress(5)) == pytest.approx(0.5)
    clock.now += 50
    assert budget.over(10) and budget.ended_by(10) == "time budget" and budget.left() == "0:00"


def test_steps_or_time_whichever_ends_first() -> None:
    clock = FakeClock()
    budget = Budget(steps=20, seconds=100, clock=clock)
    budget.start()
    clock.now += 10
    assert budget.progress(15) == 0.75  # steps ahead of time
    assert budget.over(20) and budget.ended_by(20) == "steps"
    clock.now += 70
    assert budget.progress(1) == pytest.approx(0.8)  # time ahead of steps
    budget.exclude(40)  # a compilation's seconds are not charged
    assert budget.progress(1) == pytest.approx(0.4)
    resumed = Budget(steps=0, seconds=100, spent=80.0, clock=clock)
    resumed.start()
    clock.now += 19
    assert resumed.progress(0) == pytest.approx(0.99) and not resumed.over(0)
    with pytest.raises(ValueError, match="steps, a time budget, or both"):
        Budget(steps=0, seconds=None)


def test_a_crop_costs_the_crop_not_the_image() -> None:
    """Only the window drawn for the rotation and scale is read (NaN outside it would show),
    the window is no larger than they need, and masks stay exact and aligned."""
    transform = train_transform(64, mean=(0.5,) * 3, std=(0.25,) * 3, rotation=15, jitter=0.0)
    crop = transform.steps.transforms[0]
    torch.manual_seed(0)
    params = crop.make_params([torch.zeros(3, 1000, 1000)])
    top, left, window = params["top"], params["left"], params["window"]
    widest = math.cos(math.radians(15)) + math.sin(math.radians(15))  # at 15 degrees
    assert 64 <= window <= math.ceil(64 * widest / 0.75) + 2
    source = torch.full((3, 1000, 1000), float("nan"))
    source[:, top : top + window, left : left + window] = 0.5
    assert torch.isfinite(crop.transform(source, params)).all()
    image = np.random.default_rng(0).random((1000, 1000, 3), dtype=np.float32)
    mask = np.zeros((1000, 1000), dtype=np.int64)
    mask[:, 500:] = 2  # two classes: nearest-neighbour resampling keeps only 0 and 2
    x, m, roi = transform(image, mask, np.ones((1000, 1000), bool))
    assert x.shape == (3, 64, 64) and m.shape == roi.shape == (64, 64)
    assert set(m.unique().tolist()) <= {0, 2} and m.dtype == torch.int64 and roi.dtype == torch.bool


def test_a_set_is_decoded_once_and_kept_as_uint8_within_its_budget(tmp_path: Path) -> None:
    source = parse_spec(f"folder:{squares_dataset(tmp_path)}")
    samples = source.splits()["train"]
    transform = train_transform(32, mean=(0.5,) * 3, std=(0.25,) * 3)
    dataset = SegmentationDataset(samples, transform, patches_per_image=4)
    assert not dataset.keep_all(budget_bytes=60 * 80 * 3)  # not even one image: nothing kept
    assert dataset.keep_all()
    image, mask, _ = dataset._arrays(0)
    assert image.dtype == np.uint8 and image.max() == 255 and mask.dtype == bool
    for sample in samples:  # nothing is read again: the files may even go away
        sample.image.unlink()
    assert dataset[5]["image"].shape == (3, 32, 32)


def test_a_budgeted_planned_run_saves_its_plan_threshold_and_how_it_ended(
    tmp_path: Path, capsys
) -> None:
    data = squares_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(["--plan", "auto", "--data", f"folder:{data}", "--output", str(run), "--workers", "0",
          "--model-kwargs", '{"base_channels": 4}', "--time-budget", "3s", "--val-fraction", "0.34",
          "--image-size", "32"])  # fmt: skip
    out = capsys.readouterr().out
    assert "plan (explicit flags win):" in out and "ended by the time budget" in out
    plan = json.loads((run / "plan.json").read_text())
    assert plan["image_size"] == 128 and plan["note"]["reasons"][0].startswith("hardware:")
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["image_size"] == 32 and settings["epochs"] == 0  # the flag beat the plan
    assert settings["model_kwargs"] == {"base_channels": 4}
    assert settings["note"]["ended_by"] == "time budget" and settings["note"]["steps"] >= 1
    config = json.loads((run / "config.json").read_text())
    assert config["mean"] == plan["mean"] and config["std"] == plan["std"]
    if "threshold_from" in config:  # the validation image had foreground to tune on
        assert config["threshold_from"] == "validation" and 0.01 <= config["threshold"] <= 0.99


def test_a_budgeted_run_resumes_with_the_time_it_had_spent(tmp_path: Path) -> None:
    data = squares_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(["--data", f"folder:{data}", "--output", str(run), "--workers", "0", "--model", "unet",
          "--model-kwargs", '{"base_channels": 4}', "--image-size", "32", "--batch-size", "2",
          "--val-fraction", "0.34", "--no-evaluate", "--time-budget", "2s"])  # fmt: skip
    first = json.loads((run / "train_config.json").read_text())["note"]
    budget = math.ceil(first["seconds"]) + 2  # room for more steps, however slow the machine
    main(["--resume", str(run), "--time-budget", f"{budget}s"])
    second = json.loads((run / "train_config.json").read_text())["note"]
    assert first["ended_by"] == second["ended_by"] == "time budget"
    assert second["steps"] > first["steps"]
    assert budget <= second["seconds"] < budget + first["seconds"]  # the time spent carried on
    epochs = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().split()[1:]]
    assert epochs == list(range(1, len(epochs) + 1))  # the resumed epochs follow on


@pytest.mark.parametrize(
    ("width", "side", "scale"),
    [
        (64.0, 1024, 1.0),  # 4 widths fill a 256 crop exactly: full resolution
        (100.0, 1024, 0.64),  # 256 / 400: a crop holds 4 widths at 0.64
        (200.0, 1024, 0.32),
        (200.0, 512, 0.5),  # no smaller than the median image's shorter side in one crop
        (2000.0, 4096, 0.25),  # and never below a quarter
    ],
)
def test_objects_too_large_for_a_crop_are_trained_at_a_reduced_resolution(
    width: float, side: int, scale: float
) -> None:
    settings, reasons = make_plan(fingerprint_with(width, side=side), Hardware(threads=2))
    assert settings["image_size"] == 256 and settings["scale"] == scale
    assert any(line.startswith(f"scale {scale:g}:") for line in reasons) == (scale < 1)
    expected = min(16, max(1, math.ceil(side**2 * scale**2 / 256**2)))
    assert settings["patches_per_image"] == expected  # crops cover the image at that scale


def test_a_dataset_at_half_resolution_keeps_labels_and_region(tmp_path: Path) -> None:
    data = squares_dataset(tmp_path)
    samples = parse_spec(f"folder:{data}").splits()["train"]
    half = SegmentationDataset(samples, _eval(), scale=0.5)
    item = half[0]
    assert item["image"].shape == (3, 30, 40) and item["mask"].shape == item["roi"].shape
    assert set(item["mask"].unique().tolist()) == {0, 1}  # labels by nearest, never blended
    assert item["mask"].sum() == 125  # the 10x10 and 20x20 squares: 25 + 100 pixels
    with pytest.raises(ValueError, match=r"scale must be a number in \(0, 1\], got 0"):
        SegmentationDataset(samples, _eval(), scale=0)


def _eval():
    from trainers.data import eval_transform

    return eval_transform(mean=(0.5,) * 3, std=(0.25,) * 3)


def test_a_model_with_a_scale_answers_at_the_input_size_and_keeps_its_scale(
    tmp_path: Path,
) -> None:
    import zoo

    torch.manual_seed(0)
    model = zoo.create_model("unet", base_channels=4).eval()
    model.scale = 0.5
    x = torch.rand(1, 3, 64, 48)
    small = torch.nn.functional.interpolate(x, size=[32, 24], mode="bilinear", antialias=True)
    expected = torch.nn.functional.interpolate(
        model.predict_normalized(small), size=[64, 48], mode="bilinear"
    )
    torch.testing.assert_close(model.predict(x), expected)
    tiled = zoo.sliding_window_predict(model, torch.rand(1, 3, 300, 200), tile=64)
    assert tiled.shape == (1, 1, 300, 200)  # tiles at half resolution, the answer at full
    zoo.save_pretrained(model, tmp_path / "half")
    assert json.loads((tmp_path / "half" / "config.json").read_text())["scale"] == 0.5
    assert zoo.from_pretrained(tmp_path / "half").scale == 0.5
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    (tmp_path / "half" / "config.json").write_text(json.dumps({**config, "scale": 2}))
    with pytest.raises(ValueError, match=r"half/config.json: the scale must be .* got 2"):
        zoo.from_pretrained(tmp_path / "half")


def test_a_run_at_half_resolution_is_evaluated_and_served_at_full_size(tmp_path: Path) -> None:
    import zoo
    from tests.test_train import disc_dataset, run_args

    run = tmp_path / "run"
    main(run_args(disc_dataset(tmp_path / "data"), run, "--epochs", "1", "--scale", "0.5",
                  "--model", "unet", "--model-kwargs", '{"base_channels": 4}'))  # fmt: skip
    assert json.loads((run / "config.json").read_text())["scale"] == 0.5
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["n_images"] == 2  # measured against the full-size targets
    model = zoo.from_pretrained(run)
    assert model.predict(torch.rand(1, 3, 48, 48)).shape == (1, 1, 48, 48)
