"""The batch `predict` command: inputs found and their paths kept, outputs and rows written,
bad files listed and skipped, a second run resuming, nothing under the inputs written."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import REPO
from trainers.data.inputs import list_inputs
from trainers.predict import main

WEIGHTS = str(REPO / "weights" / "dsb2018-unet")


def study(root: Path) -> Path:
    """plate1/a.png (a bright disc on dark), plate1/deep/b.tif (16-bit grey, 2 discs),
    plate2/c.jpg, and plate2/broken.png (not an image)."""
    rows, columns = np.indices((64, 80))
    disc = ((rows - 32) ** 2 + (columns - 40) ** 2 <= 100).astype(np.uint8)
    (root / "plate1" / "deep").mkdir(parents=True)
    (root / "plate2").mkdir()
    Image.fromarray(np.stack([disc * 220 + 20] * 3, axis=2)).save(root / "plate1" / "a.png")
    two = ((rows - 20) ** 2 + (columns - 20) ** 2 <= 64) | (
        (rows - 44) ** 2 + (columns - 60) ** 2 <= 64
    )
    tifffile.imwrite(root / "plate1" / "deep" / "b.tif", (two * 50000 + 3000).astype(np.uint16))
    Image.fromarray(np.stack([disc * 200 + 30] * 3, axis=2)).save(root / "plate2" / "c.jpg")
    (root / "plate2" / "broken.png").write_bytes(b"not a png at all")
    return root


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
    assert mask.shape == (64, 80) and set(np.unique(mask)) <= {0, 255} and mask[32, 40] == 255
    probabilities = np.load(out / "plate1" / "deep" / "b_probabilities.npy")
    assert probabilities.dtype == np.float16 and probabilities.shape == (1, 64, 80)
    with (out / "results.csv").open(newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["plate1/a.png", "plate1/deep/b.tif", "plate2/c.jpg"]
    assert rows["plate1/deep/b.tif"]["objects"] == "2"
    disc_fraction = float(rows["plate1/a.png"]["fraction_nucleus"])
    assert disc_fraction == pytest.approx((mask > 0).mean(), abs=1e-6) and disc_fraction > 0.05
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
