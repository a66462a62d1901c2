"""Training that configures itself: the fingerprint, the plan's rules, the time budget, crops
taken before augmenting, data sets decoded once, and the validation threshold."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO
from tests.test_train import disc_dataset
from trainers.data import parse_spec, train_transform
from trainers.data.dataset import SegmentationDataset
from trainers.data.fingerprint import Fingerprint, fingerprint, light_ground
from trainers.fit.budget import Budget, cosine, parse_duration
from trainers.fit.plan_finetune import FINETUNE_LR, WARMUP_STEPS, finetune_plan
from trainers.fit.plan_rules import Candidate, Hardware, make_plan
from trainers.fit.plan_timing import check_budget
from trainers.fit.settings import FIELDS, TrainConfig
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
    assert f.light == 0.0  # each image's median is its ground, 100 / 255


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
    assert gpu["image_size"] == 512 and gpu["model_kwargs"] == {"base_channels": 16}  # untimed
    assert gpu["batch_size"] == 80 and gpu["workers"] == 8  # 80 GB x 2 x (256 / 512)^2 x 32 / 16


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


def test_the_default_run_is_planned_and_saves_its_plan_threshold_and_how_it_ended(
    tmp_path: Path, capsys
) -> None:
    data = disc_dataset(tmp_path / "data")  # every image has a disc: validation has foreground
    run = tmp_path / "run"
    main(["--data", f"folder:{data}", "--output", str(run), "--workers", "0",
          "--model-kwargs", '{"base_channels": 4}', "--steps", "6", "--val-fraction", "0.25",
          "--image-size", "32"])  # fmt: skip
    out = capsys.readouterr().out
    assert "plan (explicit flags win):" in out and "ended by the steps after 6 steps" in out
    plan = json.loads((run / "plan.json").read_text())
    assert plan["note"]["reasons"][0].startswith("hardware:") and plan["steps"] == 6
    assert plan["note"]["step_seconds"] > 0  # the one candidate the flags leave, timed
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["image_size"] == 32 and settings["steps"] == 6  # the flags beat the plan
    assert settings["model"] == "unet" and settings["model_kwargs"] == {"base_channels": 4}
    note = settings["note"]
    assert (note["ended_by"], note["steps"]) == ("steps", 6) and not settings["time_budget"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))  # training: the intervals' seconds
    assert note["training_seconds"] == round(sum(float(row["seconds"]) for row in rows), 1)
    assert 0 <= note["training_seconds"] <= note["seconds"]
    assert f"({note['training_seconds']:.0f} s of them training, validation excluded)" in out
    config = json.loads((run / "config.json").read_text())
    assert config["mean"] == plan["mean"] and config["std"] == plan["std"]
    assert config["threshold_from"] == "validation" and 0.01 <= config["threshold"] <= 0.99


def test_a_planned_run_without_steps_is_ended_by_its_clock_not_a_count(
    tmp_path: Path, capsys
) -> None:
    data = disc_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(["--data", f"folder:{data}", "--output", str(run), "--workers", "0", "--no-evaluate",
          "--model-kwargs", '{"base_channels": 4}', "--image-size", "32", "--val-fraction",
          "0.25", "--time-budget", "4s"])  # fmt: skip
    assert "steps until the 4s are spent in" in capsys.readouterr().out
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["steps"] == 0 and settings["time_budget"] == "4s"
    note = settings["note"]
    assert note["ended_by"] == "time budget" and note["seconds"] >= 4 and note["steps"] > 0


def test_an_explicit_threshold_wins_and_the_tuned_one_is_reported(tmp_path: Path, capsys) -> None:
    data = disc_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(["--plan", "none", "--model", "unet", "--model-kwargs", '{"base_channels": 4}',
          "--data", f"folder:{data}", "--output", str(run), "--workers", "0", "--steps", "2",
          "--image-size", "32", "--val-fraction", "0.25", "--threshold", "0.3"])  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["threshold"] == 0.3 and "threshold_from" not in config
    assert "threshold 0.30 kept (--threshold, or the model --finetune starts from); the " \
        "validation images' would be" in capsys.readouterr().out  # fmt: skip


@pytest.mark.parametrize(
    ("best", "warned"), [(0.0, True), (0.01, True), (0.014, True), (0.02, False), (0.5, False),
                         (0.98, False), (0.99, True), (1.0, True)],
)  # fmt: skip
def test_a_best_threshold_at_the_edge_of_the_range_is_warned_of(best: float, warned: bool) -> None:
    from trainers.fit.loop import edge_warning

    assert bool(edge_warning(best)) == warned
    assert not warned or f"at the edge of the thresholds, {best:.2f}" in edge_warning(best)


def test_a_run_syncs_with_the_host_a_few_times_per_interval_not_every_step(
    tmp_path: Path, monkeypatch
) -> None:
    """40 steps validated every 20: the project's code reads the loss once per interval
    (Tensor.item), never per step. Counted: the calls made from bioseg's own files (torch's Adam
    reads its step counter, a CPU tensor on any device, which is no device sync)."""
    data = disc_dataset(tmp_path / "data")
    calls: list[str] = []
    item = torch.Tensor.item

    def counted(self):
        caller = traceback.extract_stack(limit=2)[0].filename
        if caller.startswith(str(REPO)) and "site-packages" not in caller:
            calls.append(caller)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    main(["--plan", "none", "--model", "unet", "--model-kwargs", '{"base_channels": 4}',
          "--data", f"folder:{data}", "--output", str(tmp_path / "run"), "--workers", "1",
          "--steps", "40", "--val-every", "20", "--image-size", "32", "--batch-size", "2",
          "--val-fraction", "0.25", "--no-evaluate"])  # fmt: skip
    assert len(calls) == 2  # one per interval


def test_a_set_too_small_or_a_crop_too_large_or_a_budget_too_short_is_named(
    tmp_path: Path, capsys
) -> None:
    tiny = disc_dataset(tmp_path / "tiny", count=3)  # one training image
    with pytest.raises(SystemExit):
        main(["--data", f"folder:{tiny}", "--output", str(tmp_path / "a")])
    assert f"folder:{tiny} has 1 training image(s); the plan needs at least 2" in (
        capsys.readouterr().err
    )
    data = disc_dataset(tmp_path / "data")
    with pytest.raises(SystemExit):
        main(["--data", f"folder:{data}", "--output", str(tmp_path / "b"), "--image-size", "64"])
    assert "--image-size 64 is larger than every image of folder:" in capsys.readouterr().err
    plan = {"note": {"step_seconds": 0.5}}
    config = TrainConfig(data="x:y", time_budget="30s", val_every=100)
    with pytest.raises(ValueError, match=r"30s is shorter than one validation interval: 100 "
                       r"steps of 0.50 s here, about 50 s"):  # fmt: skip
        check_budget(config, plan)
    check_budget(TrainConfig(data="x:y", time_budget="60s", val_every=100), plan)  # fits


def test_help_explains_each_flag_its_unit_and_default_with_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "the data set as KIND:PATH; kinds: drive, isbi2012," in out
    assert "optimizer steps the run trains for (the plan chooses them)" in out
    assert "(default: 1000)" in out and "e.g. 90s, 20m, 2h" in out
    assert "--plan {auto,none}" in out and "auto (the default, but for --preset and --config" in out
    assert "python -m trainers.train --data drive:../shared/data/DRIVE" in out  # examples
    for name, spec in FIELDS.items():  # every setting documented
        assert " ".join(spec.metadata["help"].split()) in out, name


def test_a_budgeted_run_resumes_with_the_time_it_had_spent(tmp_path: Path) -> None:
    data = squares_dataset(tmp_path / "data")
    run = tmp_path / "run"
    main(["--plan", "none", "--data", f"folder:{data}", "--output", str(run), "--workers", "0",
          "--model", "unet", "--model-kwargs", '{"base_channels": 4}', "--image-size", "32",
          "--batch-size", "2", "--val-fraction", "0.34", "--no-evaluate",
          "--time-budget", "3s"])  # fmt: skip
    first = json.loads((run / "train_config.json").read_text())["note"]
    budget = math.ceil(first["seconds"]) + 1  # a second more than the first process spent
    main(["--resume", str(run), "--time-budget", f"{budget}s"])
    second = json.loads((run / "train_config.json").read_text())["note"]
    assert first["ended_by"] == second["ended_by"] == "time budget"
    assert second["seconds"] >= budget
    # The time spent was carried on: the resumed process trained for what was left (about a
    # second, a third of the first's time), so fewer steps than the first; had it started the
    # clock afresh, it would have trained for the whole budget: more steps than the first.
    assert 0 < second["steps"] - first["steps"] < first["steps"]
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().split()[1:]]
    assert steps == sorted(steps) and steps[-1] == second["steps"]  # the resumed steps follow on


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


def test_a_dataset_at_half_or_1_5_times_the_resolution_keeps_labels_and_region(
    tmp_path: Path,
) -> None:
    data = squares_dataset(tmp_path)
    samples = parse_spec(f"folder:{data}").splits()["train"]
    half = SegmentationDataset(samples, _eval(), scale=0.5)
    item = half[0]
    assert item["image"].shape == (3, 30, 40) and item["mask"].shape == item["roi"].shape
    assert set(item["mask"].unique().tolist()) == {0, 1}  # labels by nearest, never blended
    assert item["mask"].sum() == 125  # the 10x10 and 20x20 squares: 25 + 100 pixels
    enlarged = SegmentationDataset(samples, _eval(), scale=1.5)[0]
    assert enlarged["image"].shape == (3, 90, 120) and enlarged["roi"].shape == (90, 120)
    assert set(enlarged["mask"].unique().tolist()) == {0, 1}
    assert enlarged["mask"].sum() == 15**2 + 30**2  # the squares 1.5 times as wide
    with pytest.raises(ValueError, match=r"scale must be a number in \(0, 1.5\], got 0"):
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
    normalized = zoo.normalize(small, model.spec.mean, model.spec.std)
    expected = torch.nn.functional.interpolate(
        model.predict_normalized(normalized), size=[64, 48], mode="bilinear"
    )
    torch.testing.assert_close(model.predict(x), expected)
    tiled = zoo.sliding_window_predict(model, torch.rand(1, 3, 300, 200), tile=64)
    assert tiled.shape == (1, 1, 300, 200)  # tiles at half resolution, the answer at full
    zoo.save_pretrained(model, tmp_path / "half")
    assert json.loads((tmp_path / "half" / "config.json").read_text())["scale"] == 0.5
    assert zoo.from_pretrained(tmp_path / "half").scale == 0.5
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    (tmp_path / "half" / "config.json").write_text(json.dumps({**config, "scale": 2}))
    with pytest.raises(ValueError, match=r"half/config.json: the scale must be .*1.5\], got 2"):
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


def fake_timer(seconds_at_16_128: float, bf16_speedup: float = 2.0):
    """Seconds per step in proportion to the work (width squared x pixels x batch), with bf16
    `bf16_speedup` times faster: a machine whose speed the test chooses."""

    def timer(candidate: Candidate, precision: str) -> float:
        width = candidate.model_kwargs.get("base_channels", 16)
        work = (width / 16) ** 2 * (candidate.crop / 128) ** 2 * candidate.batch / 8
        return seconds_at_16_128 * work / (bf16_speedup if precision == "bf16" else 1.0)

    return timer


def fingerprint_of(images: int, side: int, width: float) -> Fingerprint:
    return dataclasses.replace(fingerprint_with(width, side=side), images=images)


CPU = Hardware(threads=2, cpu_bf16=True)
FAST_CPU = Hardware(threads=16, cpu_bf16=True)
GPU = Hardware(threads=16, gpu_memory_gb=80, gpu_name="H100", gpu_bf16=True)
MACHINES = {  # this CPU's timings, a 16-core CPU six times as fast, an 80 GB GPU
    "this CPU": (CPU, fake_timer(0.33)),
    "16-core CPU": (FAST_CPU, fake_timer(0.33 / 6)),
    "80 GB GPU": (GPU, fake_timer(0.33 / 1000)),
}


@pytest.mark.parametrize(
    ("images", "hardware", "timer", "steps", "model_kwargs", "crop", "precision"),
    [
        # 16 images of 600 px (DRIVE-like), 16 crops each: 100 passes of 32 steps = 3200 steps
        # wanted; 16 channels at 128 take 0.165 s in bf16 (528 s of the 960 s training share,
        # 80 % of 20 minutes); 16 at 192 (0.37 s) and 16 at 256 (0.33 s, batch 4) would take
        # over 960 s, so 16 at 128 fills the share: 960 / 0.165 = 5818 steps.
        (16, CPU, fake_timer(0.33), 5818, {"base_channels": 16}, 128, "bf16"),
        # 2,000 images: 100 passes would be 100,000 steps, capped at 10,000; not even the
        # smallest candidate trains them in 960 s, so the fastest trains what fits, 5818 steps.
        (2000, CPU, fake_timer(0.33), 5818, {"base_channels": 16}, 128, "bf16"),
        # An 80 GB GPU: batch 128 (memory), 16 images x 16 crops / 128 = 2 steps a pass, 200
        # wanted, raised to the floor of 2000; every candidate fits, so the largest: 64
        # channels at 512 (batch 20: 0.33 ms x 16 x 16 x 2.5 / 2 = 0.106 s): 9090 steps fill 960 s.
        (16, GPU, fake_timer(0.33 / 1000), 9090, {"base_channels": 64}, 512, "bf16"),
        # 2,000 images on it: 25,000 steps wanted, capped at 10,000; 32 channels at 512 (batch
        # 40, 53 ms) train them in 528 s and fill 960 s with 18,181; 64 at 256 (106 ms) would not.
        (2000, GPU, fake_timer(0.33 / 1000), 18_181, {"base_channels": 32}, 512, "bf16"),
    ],
)
def test_the_plan_fills_its_time_with_the_largest_model_that_trains_the_steps_wanted(
    images: int, hardware: Hardware, timer, steps: int, model_kwargs: dict, crop: int,
    precision: str,
) -> None:  # fmt: skip
    settings, reasons = make_plan(fingerprint_of(images, 600, 8.0), hardware, timer=timer)
    assert planned_steps(reasons) == steps and settings["val_every"] == round(steps / 20)
    assert settings["steps"] == 0 and settings["time_budget"] == "1200s"  # the clock ends it
    assert settings["model_kwargs"] == model_kwargs and settings["image_size"] == crop
    assert settings["precision"] == precision
    seconds = timer(Candidate("unet", model_kwargs, crop, settings["batch_size"]), precision)
    assert 0.99 * 0.8 * 20 * 60 <= steps * seconds <= 0.8 * 20 * 60


def planned_steps(reasons: list[str]) -> int:
    """The steps the plan expects to fit its training share, from its printed length line."""
    (line,) = [line for line in reasons if " steps, validated and checkpointed every " in line]
    return int(line.split()[0])


def expected_training(settings: dict, reasons: list[str], timer) -> float:
    chosen = Candidate(
        "unet", settings["model_kwargs"], settings["image_size"], settings["batch_size"]
    )
    return planned_steps(reasons) * timer(chosen, settings["precision"])


@pytest.mark.parametrize("images", [20, 500, 5000])
def test_every_machine_fills_its_time_and_a_larger_one_never_gets_a_smaller_model(images) -> None:
    f = fingerprint_of(images, 600, 8.0)
    made = {
        name: make_plan(f, hardware, timer=timer) for name, (hardware, timer) in MACHINES.items()
    }
    plans = {name: settings for name, (settings, _) in made.items()}
    for name, (_, timer) in MACHINES.items():
        assert expected_training(*made[name], timer) >= 0.85 * 0.8 * 20 * 60, name
        assert plans[name]["steps"] == 0  # and the clock, not the count, ends the run
    sizes = [
        Candidate("unet", plan["model_kwargs"], plan["image_size"], plan["batch_size"]).size
        for plan in plans.values()
    ]
    assert sizes[0] < sizes[1] < sizes[2]  # this CPU, the 16-core CPU, the GPU


def test_every_candidate_that_could_fit_is_timed_and_the_plan_says_what_it_tried() -> None:
    timed: list[Candidate] = []
    timer = fake_timer(0.33)

    def recording(candidate: Candidate, precision: str) -> float:
        timed.append(candidate)
        return timer(candidate, precision)

    _, reasons = make_plan(fingerprint_of(16, 600, 8.0), CPU, timer=recording)
    # 16 at 192 is too slow for the 3200 steps, yet 16 at 256 (batch 4) is timed after it.
    crops = [(c.model_kwargs["base_channels"], c.crop) for c in timed if c.crop > 0]
    assert (16, 192) in crops and (16, 256) in crops
    assert (64, 512) not in crops  # its work, scaled, is far over the time: not timed
    text = "\n".join(reasons)
    assert "timed a step of each candidate" in text and "not timed, their work scaled" in text
    assert "5818 steps fill that time, 1.8 times the steps wanted" in text


def test_no_time_budget_means_the_allowance_and_a_budget_caps_the_steps() -> None:
    f = fingerprint_of(16, 600, 8.0)
    unbudgeted, reasons = make_plan(f, CPU, timer=fake_timer(0.33))
    budgeted, _ = make_plan(f, CPU, timer=fake_timer(0.33), seconds=20 * 60)
    assert unbudgeted == budgeted  # no --time-budget: the plan allows itself 20 minutes
    assert "no --time-budget: the plan allows itself 20 min" in "\n".join(reasons)
    short, reasons = make_plan(f, CPU, timer=fake_timer(0.33), seconds=5 * 60)
    assert planned_steps(reasons) == int(0.8 * 300 / 0.165) and short["time_budget"] == "300s"


def test_precision_bf16_where_faster_fp16_without_bf16_fp32_without_units() -> None:
    f = fingerprint_of(16, 600, 8.0)
    assert make_plan(f, CPU, timer=fake_timer(0.33, bf16_speedup=2.0))[0]["precision"] == "bf16"
    assert make_plan(f, CPU, timer=fake_timer(0.33, bf16_speedup=0.8))[0]["precision"] == "fp32"
    plain = Hardware(threads=2)  # no bf16 units: fp32, bf16 never timed
    timed: list[str] = []
    make_plan(f, plain, timer=lambda c, p: timed.append(p) or 0.1)
    assert "bf16" not in timed
    old_gpu = Hardware(threads=8, gpu_memory_gb=16, gpu_name="V100")
    settings, reasons = make_plan(f, old_gpu, timer=fake_timer(0.001))
    assert settings["precision"] == "fp16" and "GradScaler" in "\n".join(reasons)


def test_the_plan_averages_the_weights_unless_a_flag_says_otherwise() -> None:
    f = fingerprint_of(16, 600, 8.0)
    settings, reasons = make_plan(f, CPU, timer=fake_timer(0.33))
    assert settings["ema"] == 0.999 and any(line.startswith("weights averaged") for line in reasons)
    settings, reasons = make_plan(f, CPU, timer=fake_timer(0.33), fixed={"ema": 0.0})
    assert "ema" not in settings and not any("averaged" in line for line in reasons)


def test_explicit_flags_are_kept_by_the_plan() -> None:
    fixed = {"model_kwargs": {"base_channels": 8}, "image_size": 64, "batch_size": 2,
             "steps": 50, "precision": "fp32"}  # fmt: skip
    seen: list[tuple] = []

    def timer(candidate: Candidate, precision: str) -> float:
        seen.append((candidate.model_kwargs, candidate.crop, candidate.batch, precision))
        return 0.01

    settings, _ = make_plan(fingerprint_of(16, 600, 8.0), CPU, timer=timer, fixed=fixed)
    assert seen == [({"base_channels": 8}, 64, 2, "fp32")]  # the one candidate they leave
    assert {k: settings[k] for k in fixed} == fixed and settings["val_every"] == 2


def test_the_fingerprint_reads_through_the_readers(tmp_path: Path) -> None:
    """16-bit colour TIFFs (tifffile's, which Pillow opens as 8-bit RGB): the fingerprint sees
    what the readers decode, 16 bits, and the intensities as the trainer will."""
    import tifffile

    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for kind in ("images", "masks"):
            (tmp_path / split / kind).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
            tifffile.imwrite(tmp_path / split / "images" / f"t{index}.tif", pixels)
            mask = np.zeros((40, 50), np.uint8)
            mask[10:20, 10:30] = 255
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"t{index}.png")
    f = fingerprint(parse_spec(f"folder:{tmp_path}"))
    assert f.bits == 16 and f.channels == 3 and f.images == 2
    assert f.mean == pytest.approx((0.5,) * 3, abs=0.01)  # uniform over 0..65535


def test_the_plan_trains_the_object_target_where_the_masks_label_objects() -> None:
    labelled = dataclasses.replace(fingerprint_with(30.0), objects=True)
    settings, reasons = make_plan(labelled, Hardware(threads=2))
    assert settings["objects"] is True
    assert any(line.startswith("objects: the masks label each object") for line in reasons)
    kept, _ = make_plan(labelled, Hardware(threads=2), fixed={"objects": False})
    assert "objects" not in kept  # --no-objects wins
    plain, _ = make_plan(fingerprint_with(30.0), Hardware(threads=2))
    assert "objects" not in plain


def test_the_plan_inverts_crops_where_the_images_have_both_grounds() -> None:
    mixed = dataclasses.replace(fingerprint_with(30.0), light=0.2)
    settings, reasons = make_plan(mixed, Hardware(threads=2))
    assert settings["invert"] == 0.3
    assert any(
        line.startswith("invert 0.3: 20% of the images have a light ground") for line in reasons
    )
    for light in (0.0, 0.04, 0.96, 1.0):  # one ground, or nearly
        assert (
            "invert"
            not in make_plan(dataclasses.replace(mixed, light=light), Hardware(threads=2))[0]
        )
    kept, _ = make_plan(mixed, Hardware(threads=2), fixed={"invert": 0.0})
    assert "invert" not in kept  # --invert 0 wins


def test_a_light_ground_is_a_median_above_one_half_of_the_pixels_scale() -> None:
    assert light_ground(np.array([0, 200, 128], np.uint8))  # median 128 of 255
    assert not light_ground(np.array([0, 200, 127], np.uint8))
    assert light_ground(np.array([0.6, 0.9, 0.1], np.float32))
    assert not light_ground(np.array([0.4, 0.9, 0.1], np.float32))
    assert not light_ground(np.zeros(0, np.float32))  # no pixels inside the roi


def test_the_plan_balances_the_grounds_where_the_images_have_both() -> None:
    mixed = dataclasses.replace(fingerprint_with(30.0), light=0.2)
    settings, reasons = make_plan(mixed, Hardware(threads=2))
    assert settings["balance_grounds"] is True
    assert any(line.startswith("grounds balanced: 20% of the images") for line in reasons)
    single = dataclasses.replace(mixed, light=0.0)
    assert "balance_grounds" not in make_plan(single, Hardware(threads=2))[0]
    kept, _ = make_plan(mixed, Hardware(threads=2), fixed={"balance_grounds": False})
    assert "balance_grounds" not in kept and kept["invert"] == 0.3  # the flag wins alone


def test_an_invert_probability_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"invert must be a probability in \[0, 1\], got 1.2"):
        TrainConfig(data="x:y", invert=1.2)


DRIVE_BASE = {"model": "unet", "model_kwargs": {"base_channels": 16}, "image_size": 256,
              "scale": 1.0, "object_width": 12.6}  # fmt: skip


@pytest.mark.parametrize(("pairs", "held_back"), [(1, 0.0), (4, 0.0), (5, 0.2), (30, 0.2)])
def test_a_fine_tune_on_fewer_than_five_pairs_trains_on_all_and_says_so(pairs, held_back) -> None:
    f = dataclasses.replace(fingerprint_with(12.6, side=584), images=pairs)
    settings, reasons = finetune_plan(DRIVE_BASE, f, CPU, timer=fake_timer(0.33))
    assert settings["val_fraction"] == held_back
    assert ("none is held back" in "\n".join(reasons)) == (pairs < 5)
    assert settings["lr"] == FINETUNE_LR and settings["warmup"] == WARMUP_STEPS > 0
    assert settings["batch_dice"] is True  # a few images' crops: most hold little foreground


@pytest.mark.parametrize(
    ("base_width", "base_scale", "width", "scale"),
    [
        (12.6, 1.0, 12.6 * 1.7, 0.59),  # DRIVE's vessels seen 1.7 times wider: 12.6 / 21.42
        (12.6, 1.0, 6.3, 1.0),  # narrower ones: never enlarged (measured worse on DSB 2018)
        (40.0, 0.5, 40.0, 0.5),  # a base trained at half resolution: the same objects, the same
        (12.6, 1.0, 500.0, 0.25),  # at least a quarter
        (None, 0.5, 40.0, 0.5),  # a base with no object width keeps its scale, and says so
    ],
)
def test_a_fine_tune_brings_the_new_objects_to_the_width_the_base_learned(
    base_width, base_scale, width, scale
) -> None:
    base = {**DRIVE_BASE, "scale": base_scale, "object_width": base_width}
    settings, reasons = finetune_plan(base, fingerprint_with(width, side=584), CPU)
    assert settings["scale"] == scale and settings["object_width"] == round(width, 2)
    line = next(line for line in reasons if line.startswith(f"scale {scale:g}"))
    assert ("its config has no object width" in line) == (base_width is None)


def test_a_fine_tune_covers_each_image_every_pass_in_the_faster_precision() -> None:
    big = fingerprint_with(12.6 * 1.7, side=1000)  # 1000 x 1000 at scale 0.59: 5.3 crops of 256
    settings, reasons = finetune_plan(DRIVE_BASE, big, CPU, timer=fake_timer(0.33))
    assert settings["scale"] == 0.59 and settings["patches_per_image"] == 6
    assert settings["precision"] == "bf16" and settings["batch_size"] == 4  # 256 x 256 crops
    slower_bf16 = fake_timer(0.33, bf16_speedup=0.8)
    assert finetune_plan(DRIVE_BASE, big, CPU, timer=slower_bf16)[0]["precision"] == "fp32"
    assert any(line.startswith("precision bf16: a step of unet") for line in reasons)
