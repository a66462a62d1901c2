"""Fine-tuning on a visitor's images: pairs kept and refused, zips unpacked safely, the shared
`--finetune` code path carrying the base model over, the result exported and session-private."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from demo import finetune
from tests.conftest import REPO
from trainers.data.readers import DataError
from trainers.train import main as train

BASE = REPO / "weights" / "dsb2018-unet"


def pair(folder: Path, name: str, size: tuple[int, int] = (64, 64)) -> tuple[Path, Path]:
    """A grey image with a bright square, and its 0/255 mask."""
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    mask[16:40, 20:44] = 255
    image = np.where(mask > 0, 210, 40).astype(np.uint8)
    Image.fromarray(np.stack([image] * 3, axis=2)).save(folder / f"{name}.png")
    Image.fromarray(mask).save(folder / f"{name}_mask.png")
    return folder / f"{name}.png", folder / f"{name}_mask.png"


def test_pairs_are_kept_and_a_mask_of_another_size_is_refused(tmp_path: Path) -> None:
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "cells")
    assert session.keep(str(image), str(mask), "cells") == "cells"
    assert session.keep(str(image), str(mask), "cells") == "cells-2"  # a second, not replaced
    _, small = pair(tmp_path / "in", "small", (32, 48))
    with pytest.raises(DataError, match=r"small_mask\.png: the mask is 48x32 pixels but the image"):
        session.keep(str(image), str(small), "odd")
    assert session.pairs == ["cells", "cells-2"]  # untouched
    session.drop("cells")
    assert session.pairs == ["cells-2"]
    session.end()
    assert not session.folder.exists()


def test_a_zip_with_a_path_outside_it_or_too_many_files_is_refused_whole(tmp_path: Path) -> None:
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "a")
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.write(image, "images/a.png")
        archive.write(mask, "../masks/a.png")
    with pytest.raises(DataError, match=r"\.\./masks/a\.png lies outside the zip"):
        session.import_zip(str(escaping))
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as archive:
        for number in range(2 * finetune.MAX_PAIRS + 1):
            archive.writestr(f"images/{number}.png", b"")
    with pytest.raises(DataError, match=f"{2 * finetune.MAX_PAIRS + 1} files, more than"):
        session.import_zip(str(crowded))
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.write(image, "data/images/a.png")
        archive.write(mask, "data/masks/a_mask.png")
        archive.writestr("data/images/b.png", b"not an image")
        archive.write(mask, "data/masks/b_mask.png")
    with pytest.raises(DataError, match=r"b\.png"):
        session.import_zip(str(broken))
    assert session.pairs == []  # all or nothing
    assert not (session.folder / "unpacked").exists()  # nothing of a refused zip is left
    assert not (session.folder.parent / "masks").exists()  # nor written outside the session


def test_finetune_carries_the_base_model_over_and_starts_from_its_weights(tmp_path: Path) -> None:
    for number in range(3):
        pair(tmp_path / "data" / "images", f"p{number}")
    (tmp_path / "data" / "masks").mkdir()
    for mask in (tmp_path / "data" / "images").glob("*_mask.png"):
        mask.rename(tmp_path / "data" / "masks" / mask.name)
    train(["--finetune", str(BASE), "--data", f"folder:{tmp_path / 'data'}", "--steps", "1",
           "--lr", "1e-9", "--output", str(tmp_path / "run"), "--workers", "0", "--no-evaluate",
           "--val-fraction", "0"])  # fmt: skip
    settings = json.loads((tmp_path / "run" / "train_config.json").read_text())
    base_config = json.loads((BASE / "config.json").read_text())
    for key in ("model", "model_kwargs", "mean", "std", "threshold"):
        assert settings[key] == base_config[key], key
    assert settings["finetune"] == str(BASE) and settings["image_size"] == 128
    tuned, base = zoo.from_pretrained(tmp_path / "run"), zoo.from_pretrained(BASE)
    for (name, a), b in zip(tuned.state_dict().items(), base.state_dict().values(), strict=True):
        if a.is_floating_point() and "running" not in name:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # lr 1e-9: the base's weights


def test_a_session_fine_tunes_exports_a_loadable_zip_and_ends_private(tmp_path: Path) -> None:
    session = finetune.Session.new(tmp_path)
    for number in range(3):
        image, mask = pair(tmp_path / "in", f"p{number}")
        session.keep(str(image), str(mask), image.stem)
    token, label = session.finetune(BASE, "dsb2018-unet", seconds=3)
    assert label == "dsb2018-unet + 3 of your images" and token.startswith("yours-")
    assert session.validation_dice(token) is not None
    run = session.models[token]  # the checkpoint (with Adam's state) is gone, the model stays
    assert sorted(p.name for p in run.iterdir()) == sorted(
        name for name in finetune.KEPT_FILES if name != "README.md"
    )
    archive = session.export(token)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(tmp_path / "home")
    loaded = zoo.from_pretrained(tmp_path / "home" / token)
    assert loaded.num_classes == 1
    card = (tmp_path / "home" / token / "README.md").read_text()
    assert "finetune" in card and "dsb2018-unet" in card
    session.end()
    assert token not in session.models and not session.folder.exists()


def test_a_painted_binary_mask_fine_tunes_an_object_model_by_its_components(
    tmp_path: Path,
) -> None:
    """A found defect: the object model refused painted masks ("no objects to part"), and the
    refusal ended the fine-tune without a word on the page."""
    image, mask = pair(tmp_path / "in", "painted")
    two = np.asarray(Image.open(mask)).copy()
    two[44:60, 4:20] = 255  # a second blob, apart from the square
    Image.fromarray(two).save(mask)
    session = finetune.Session.new(tmp_path)
    stem = session.keep(str(image), str(mask), "painted")
    kept = np.asarray(Image.open(session.folder / "pairs" / "masks" / f"{stem}.png"))
    assert kept.dtype == np.uint16 and sorted(np.unique(kept)) == [0, 1, 2]
    token, _ = session.finetune(REPO / "weights" / "dsb2018-objects", "objects", seconds=2)
    tuned = zoo.from_pretrained(session.models[token])
    assert tuned.num_classes == 4 and tuned.pretrained_config["objects"] is True
    session.end()


def test_a_refused_fine_tune_is_a_data_error_naming_the_problem(tmp_path: Path) -> None:
    """The child's one-line refusal reaches the page; nothing of the failed run is left."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((BASE / "model.safetensors").read_bytes())
    config = json.loads((BASE / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model": "no_such_model"}))
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "p")
    session.keep(str(image), str(mask), "p")
    with pytest.raises(DataError, match="the fine-tune failed: .*no_such_model"):
        session.finetune(broken, "broken", seconds=2)
    assert list((session.folder / "models").iterdir()) == [] and session.models == {}
    session.end()
