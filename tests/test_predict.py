"""The batch `predict` command: inputs found and their paths kept, outputs and rows written,
bad files listed and skipped, a second run resuming, nothing under the inputs written."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import zoo
from tests.conftest import REPO, free_port
from trainers import predict as predict_module
from trainers import ranks
from trainers.data.inputs import Input, list_inputs
from trainers.data.medical import Decoded
from trainers.data.readers import read_image
from trainers.predict import Setup, main
from trainers.scores.objects import components

WEIGHTS = str(REPO / "weights" / "dsb2018-unet")


EXAMPLE = REPO / "examples" / "dsb2018" / "fluorescence-98a46348.png"


def study(root: Path) -> Path:
    """Crops of a DSB 2018 fluorescence example: plate1/a.png (8-bit RGB), plate1/deep/b.tif
    (16-bit grey), plate2/c.jpg, and plate2/broken.png (not an image)."""
    pixels = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    (root / "plate1" / "deep").mkdir(parents=True)
    (root / "plate2").mkdir()
    Image.fromarray(pixels[100:164, 100:180]).save(root / "plate1" / "a.png")
    grey = pixels[200:264, 300:380].mean(axis=2) * 257
    tifffile.imwrite(root / "plate1" / "deep" / "b.tif", grey.astype(np.uint16))
    Image.fromarray(pixels[300:364, 400:480]).save(root / "plate2" / "c.jpg", quality=95)
    (root / "plate2" / "broken.png").write_bytes(b"not a png at all")
    return root


def expected_mask(path: Path) -> np.ndarray:
    """The bundled model's own mask of an image, by `predict` on the image as read."""
    model = zoo.from_pretrained(WEIGHTS)
    image = torch.from_numpy(zoo.match_channels(read_image(path), 3)).permute(2, 0, 1)[None]
    return model.predict(image)[0, 0].numpy() > model.pretrained_config["threshold"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def predict(*extra: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", WEIGHTS, "--engine", "eager", "--workers", "0", *extra])
    return exit_info.value.code


def test_a_study_is_predicted_with_its_paths_kept_and_bad_files_listed(tmp_path: Path) -> None:
    inputs = study(tmp_path / "study")
    before = snapshot(inputs)
    status = predict("--input", str(inputs), "--output", str(tmp_path / "out"),
                     "--save-probabilities", "--workers", "2")  # fmt: skip
    assert status == 1  # one file failed
    out = tmp_path / "out"
    mask = np.asarray(Image.open(out / "plate1" / "a_mask.png"))
    assert mask.shape == (64, 80) and set(np.unique(mask)) == {0, 255}
    assert ((mask > 0) != expected_mask(inputs / "plate1" / "a.png")).sum() <= 5
    probabilities = np.load(out / "plate1" / "deep" / "b_probabilities.npy")
    assert probabilities.dtype == np.float16 and probabilities.shape == (1, 64, 80)
    with (out / "results.csv").open(newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["plate1/a.png", "plate1/deep/b.tif", "plate2/c.jpg"]
    deep = np.asarray(Image.open(out / "plate1" / "deep" / "b_mask.png")) > 0
    assert int(rows["plate1/deep/b.tif"]["objects"]) == components(deep).max() > 0
    fraction = float(rows["plate1/a.png"]["fraction_nucleus"])
    assert fraction == pytest.approx((mask > 0).mean(), abs=1e-6) and fraction > 0.05
    with (out / "errors.csv").open(newline="") as handle:
        errors = list(csv.DictReader(handle))
    assert [e["path"] for e in errors] == ["plate2/broken.png"] and "broken.png" in errors[0][
        "reason"
    ]
    about = json.loads((out / "predict.json").read_text())
    assert about["images"] == 4 and about["predicted"] == 3 and about["threshold"] == 0.5
    assert snapshot(inputs) == before  # nothing under the inputs written


def test_a_second_run_resumes_and_overwrite_redoes(tmp_path: Path) -> None:
    inputs, out = study(tmp_path / "study"), tmp_path / "out"
    (inputs / "plate2" / "broken.png").unlink()
    assert predict("--input", str(inputs), "--output", str(out)) == 0
    kept = (out / "plate1" / "a_mask.png").stat().st_mtime_ns
    (out / ".rows" / "plate2" / "c.json").unlink()  # as if killed before c's row was written
    (out / "plate2" / "c_mask.png").unlink()
    assert predict("--input", str(inputs), "--output", str(out)) == 0
    assert (out / "plate2" / "c_mask.png").is_file()
    assert (out / "plate1" / "a_mask.png").stat().st_mtime_ns == kept  # skipped: done
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 3
    assert predict("--input", str(inputs), "--output", str(out), "--overwrite") == 0
    assert (out / "plate1" / "a_mask.png").stat().st_mtime_ns != kept


def test_an_output_inside_the_inputs_is_refused(tmp_path: Path, capsys) -> None:
    inputs = study(tmp_path / "study")
    assert predict("--input", str(inputs), "--output", str(inputs / "masks")) == 2
    assert "lies inside the inputs' folder" in capsys.readouterr().err
    assert not (inputs / "masks").exists()


def test_inputs_from_a_glob_and_from_a_list_keep_paths_from_their_common_folder(
    tmp_path: Path,
) -> None:
    inputs = study(tmp_path / "study")
    found = list_inputs(f"{inputs}/**/*.tif")
    assert [i.relative.as_posix() for i in found] == ["b.tif"]
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nstudy/plate1/a.png\n\nstudy/plate2/c.jpg\n")
    assert [i.relative.as_posix() for i in list_inputs(listing)] == ["plate1/a.png", "plate2/c.jpg"]
    listing.write_text("study/plate1/missing.png\n")
    with pytest.raises(ValueError, match=r"listed files that do not exist: .*missing\.png"):
        list_inputs(listing)


def many(root: Path, count: int, corrupt: int = 0) -> Path:
    """`count` crops of the fluorescence example in PNG, JPEG and 16-bit TIFF, in three
    folders, the last `corrupt` of them truncated (unreadable)."""
    pixels = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    for number in range(count):
        folder = root / f"well{number % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        top, left = (number * 7) % 400, (number * 13) % 600
        crop = pixels[top : top + 48, left : left + 48]
        kind = ("png", "jpg", "tif")[number % 3]
        path = folder / f"tile{number:03d}.{kind}"
        if kind == "tif":
            tifffile.imwrite(path, (crop.mean(axis=2) * 257).astype(np.uint16))
        else:
            Image.fromarray(crop).save(path)
        if number >= count - corrupt:
            path.write_bytes(path.read_bytes()[:40])
    return root


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes by relative path, results.csv without its seconds column."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}
    with (folder / "results.csv").open(newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    found["results.csv"] = json.dumps(rows).encode()
    return found


# slow: 200 images (about 20 s); a bad file among good ones: test_a_study_is_predicted_...
@pytest.mark.slow
def test_two_hundred_images_with_two_corrupt_ones_in_one_command(tmp_path: Path) -> None:
    inputs = many(tmp_path / "plate", 200, corrupt=2)
    assert predict("--input", str(inputs), "--output", str(tmp_path / "out")) == 2
    with (tmp_path / "out" / "errors.csv").open(newline="") as handle:
        failed = sorted(row["path"] for row in csv.DictReader(handle))
    assert failed == ["well0/tile198.png", "well1/tile199.jpg"]
    assert len((tmp_path / "out" / "results.csv").read_text().splitlines()) == 1 + 198


def command(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "trainers.predict", "--weights", WEIGHTS, "--engine", "eager",
            "--workers", "0", "--input", str(inputs), "--output", str(out)]  # fmt: skip


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in every process


# slow: three processes; resuming in-process: test_a_second_run_resumes_and_overwrite_redoes
@pytest.mark.slow
def test_killed_halfway_it_resumes_and_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    inputs = many(tmp_path / "plate", 60)
    subprocess.run(command(inputs, tmp_path / "whole"), env=ONE_THREAD, check=True,
                   capture_output=True)  # fmt: skip
    killed = subprocess.Popen(command(inputs, tmp_path / "out"), env=ONE_THREAD,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    rows = tmp_path / "out" / ".rows"
    deadline = time.monotonic() + 300
    while len(list(rows.rglob("*.json"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = sorted(rows.rglob("*.json"))
    assert 20 <= len(done) < 60, "killed after it had finished: make the set larger"
    first = tmp_path / "out" / done[0].relative_to(rows).with_suffix("")
    mask = first.with_name(first.name + "_mask.png")
    before = mask.stat().st_mtime_ns
    subprocess.run(command(inputs, tmp_path / "out"), env=ONE_THREAD, check=True,
                   capture_output=True)  # fmt: skip
    assert mask.stat().st_mtime_ns == before  # a finished image is not redone
    assert outputs(tmp_path / "out") == outputs(tmp_path / "whole")


@pytest.mark.slow  # three processes and a torchrun launch
def test_two_processes_under_torchrun_give_one_process_s_outputs(tmp_path: Path) -> None:
    inputs = many(tmp_path / "plate", 24)
    subprocess.run(command(inputs, tmp_path / "one"), env=ONE_THREAD, check=True,
                   capture_output=True)  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(free_port())]  # fmt: skip
    two = command(inputs, tmp_path / "two")
    result = subprocess.run([*launcher, *two[1:]], env=ONE_THREAD, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    assert not list((tmp_path / "two").glob(".errors-*.csv"))  # merged by rank 0


def test_a_relative_glob_is_taken_from_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    study(tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    found = list_inputs("study/**/*.png")
    assert [i.relative.as_posix() for i in found] == ["plate1/a.png", "plate2/broken.png"]
    assert found[0].path == tmp_path / "study" / "plate1" / "a.png"


def test_inputs_whose_outputs_would_share_a_name_are_refused_naming_both(
    tmp_path: Path, capsys
) -> None:
    inputs = study(tmp_path / "study")
    tifffile.imwrite(inputs / "plate1" / "a.tif", np.zeros((8, 8), np.uint16))
    assert predict("--input", str(inputs), "--output", str(tmp_path / "out")) == 2
    (message,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message.startswith("error: ")
    assert "plate1/a.png" in message and "plate1/a.tif" in message and "a_mask.png" in message
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_collective_s_tensor_lives_on_the_group_s_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert predict_module.reduce_device("nccl") == torch.device("cuda", 1)
    assert predict_module.reduce_device("gloo") == torch.device("cpu")


def test_each_rank_takes_its_own_gpu_before_joining_an_nccl_group(monkeypatch) -> None:
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set", device)))
    monkeypatch.setattr(ranks.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ranks.dist, "init_process_group",
                        lambda backend: calls.append(("init", backend)))  # fmt: skip
    monkeypatch.setattr(ranks.dist, "get_rank", lambda: 7)
    assert ranks.setup() == (7, 4, torch.device("cuda", 3))
    assert calls == [("set", 3), ("init", "nccl")]


def plain_setup(objects: bool = False) -> Setup:
    """A Setup of a binary model (or of the object target) without a model: for the writing
    side, with predicting replaced."""
    classes = ["background", "nucleus", "nucleus boundary", "nucleus contact"]
    return Setup(None, None, "fp32", 0.5, objects, classes if objects else classes[:2], False)


def written(found: Input, setup: Setup, probabilities: np.ndarray, out: Path) -> dict:
    decoded = Decoded(np.zeros((*probabilities.shape[1:], 1), np.float32))
    return predict_module.write_outputs(
        setup, found, decoded, probabilities, predict_module.outputs_of(found, out), 0.0
    )


def test_label_images_past_65535_objects_are_written_as_32_bit_tiff(
    tmp_path: Path, monkeypatch
) -> None:
    labels = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # ids 0..89,999
    monkeypatch.setattr(predict_module, "split_objects", lambda probabilities: labels)
    probabilities = np.zeros((4, 300, 300), np.float32)
    probabilities[1] = 1
    row = written(Input(tmp_path / "a" / "b.png", Path("a/b.png")), plain_setup(True),
                  probabilities, tmp_path / "out")  # fmt: skip
    assert row["objects"] == 300 * 300 - 1
    assert not (tmp_path / "out" / "a" / "b_labels.png").exists()
    saved = tifffile.imread(tmp_path / "out" / "a" / "b_labels.tif")
    assert saved.dtype == np.uint32 and saved.max() == 89_999
    np.testing.assert_array_equal(saved, labels)


def test_an_object_model_s_mask_is_its_foreground_small_pieces_included(tmp_path: Path) -> None:
    """Background probability below one half is foreground: the 3 x 3 piece (too small to be
    an object) and the pixel where the background is the likeliest class but below one half."""
    probabilities = np.zeros((4, 20, 20), np.float32)
    probabilities[0] = 1
    probabilities[:, 2:12, 2:12] = np.array([0.0, 1.0, 0.0, 0.0])[:, None, None]  # 100 px
    probabilities[:, 15:18, 15:18] = np.array([0.1, 0.9, 0.0, 0.0])[:, None, None]  # 9 px
    probabilities[:, 0, 19] = (0.4, 0.3, 0.3, 0.0)  # argmax 0, yet foreground
    found = Input(tmp_path / "a.png", Path("a.png"))
    row = written(found, plain_setup(True), probabilities, tmp_path / "out")
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png")) > 0
    assert mask.sum() == 100 + 9 + 1 and mask[0, 19] and mask[16, 16]
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    assert labels.max() == 1 and (labels > 0).sum() == 100  # the objects: pieces over 40 px
    assert row["objects"] == 1 and row["fraction_nucleus"] == pytest.approx(110 / 400)


def test_writes_wait_in_a_bounded_queue(tmp_path: Path, monkeypatch) -> None:
    """The writer is slow; predicting must not run more than WRITES_AHEAD images ahead of it
    (each held image keeps its pixels and probabilities)."""
    todo = list_inputs(many(tmp_path / "plate", 12))
    done: list[str] = []
    ahead: list[int] = []

    def predict_one(setup: Setup, decoded: Decoded) -> np.ndarray:
        ahead.append(len(ahead) - len(done))  # predicted before this one, not yet written
        return np.zeros((1, 48, 48), np.float32)

    def slow_write(*args) -> dict:
        time.sleep(0.05)
        done.append("x")
        return {"path": "x"}

    monkeypatch.setattr(predict_module, "predict_one", predict_one)
    monkeypatch.setattr(predict_module, "write_outputs", slow_write)
    assert predict_module.predict_all(plain_setup(), todo, tmp_path / "out", 0, 0) == 0
    assert len(done) == 12 and max(ahead) <= predict_module.WRITES_AHEAD


def test_a_failed_write_is_that_image_s_error_and_the_others_are_written(
    tmp_path: Path, monkeypatch
) -> None:
    todo = list_inputs(study(tmp_path / "study"))
    monkeypatch.setattr(predict_module, "predict_one",
                        lambda setup, decoded: np.full((1, 64, 80), 0.9, np.float32))  # fmt: skip
    real_save = predict_module._save_png

    def full_disk(path: Path, pixels: np.ndarray) -> None:
        if path.name == "c_mask.png":
            raise OSError(28, "No space left on device")
        real_save(path, pixels)

    monkeypatch.setattr(predict_module, "_save_png", full_disk)
    out = tmp_path / "out"
    assert predict_module.predict_all(plain_setup(), todo, out, 0, 0) == 2  # broken.png, c.jpg
    with (out / ".errors-0.csv").open(newline="") as handle:
        errors = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert sorted(errors) == ["plate2/broken.png", "plate2/c.jpg"]
    assert "No space left on device" in errors["plate2/c.jpg"]
    assert errors["plate2/c.jpg"].startswith("writing")
    assert (out / "plate1" / "a_mask.png").is_file()
    assert (out / "plate1" / "deep" / "b_mask.png").is_file()
    assert not (out / ".rows" / "plate2" / "c.json").exists()  # not done: a resume redoes it
