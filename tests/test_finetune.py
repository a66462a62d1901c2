"""Fine-tuning on a visitor's images: pairs kept and refused, zips unpacked safely, the shared
`--finetune` code path carrying the base model over, the result exported and session-private."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
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
    with pytest.raises(DataError, match=r"the fine-tune failed: .*no_such_model"):
        session.finetune(broken, "broken", seconds=2)
    assert list((session.folder / "models").iterdir()) == [] and session.models == {}
    session.end()


def global_state() -> dict[str, object]:
    """What a training run in the server's process would change for every other request."""
    return {
        "torch_rng": torch.random.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
    }


def test_a_fine_tune_leaves_the_server_s_state_alone_and_a_second_one_is_refused(
    tmp_path: Path,
) -> None:
    """It runs in a child process: the server's random generators and torch flags are as they
    were; while it runs, the same session's second fine-tune is refused at once."""
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "p")
    session.keep(str(image), str(mask), "p")
    before = global_state()
    first = threading.Thread(target=session.finetune, args=(BASE, "base"), kwargs={"seconds": 3})
    first.start()
    deadline = time.monotonic() + 30
    while session.folder.name not in finetune.QUEUE._sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(DataError, match="a fine-tune of yours is already running or waiting"):
        session.finetune(BASE, "base", seconds=3)
    first.join(timeout=300)
    assert len(session.models) == 1
    after = global_state()
    assert torch.equal(before.pop("torch_rng"), after.pop("torch_rng"))
    np.testing.assert_array_equal(before.pop("numpy_rng"), after.pop("numpy_rng"))
    assert before == after
    session.end()


def test_the_queue_refuses_past_its_limits_per_session_address_and_server() -> None:
    queue = finetune.FinetuneQueue(per_client=2, waiting=3)
    with contextlib.ExitStack() as held:
        held.enter_context(queue.turn("a", "10.0.0.1"))  # running
        with pytest.raises(DataError, match="already running or waiting"):
            held.enter_context(queue.turn("a", "10.0.0.1"))
        # The one slot is taken: a second session waits for it, so try it in another thread.
        waiting = threading.Thread(target=lambda: queue.turn("b", "10.0.0.1").__enter__())
        waiting.daemon = True
        waiting.start()
        deadline = time.monotonic() + 5
        while "b" not in queue._sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(DataError, match="2 fine-tunes from your address"):
            held.enter_context(queue.turn("c", "10.0.0.1"))
        other = threading.Thread(target=lambda: queue.turn("d", "10.0.0.2").__enter__())
        other.daemon = True
        other.start()
        while "d" not in queue._sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(DataError, match="the server has 3 fine-tunes running or waiting"):
            held.enter_context(queue.turn("e", "10.0.0.3"))


def test_the_child_is_stopped_past_its_time_or_memory(tmp_path: Path, monkeypatch) -> None:
    argv = ["--help"]  # any command: it is stopped before it is done
    with pytest.raises(DataError, match=r"stopped: it ran past 0\.01 s"):
        finetune.run_child(argv, tmp_path, limit_seconds=0.01)
    monkeypatch.setattr(finetune, "MAX_MEMORY", 1)
    with pytest.raises(DataError, match=r"stopped: it used .* MB of memory, over the limit"):
        finetune.run_child(argv, tmp_path, limit_seconds=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # its home and log are gone


def test_the_child_inherits_no_credentials(monkeypatch, tmp_path: Path) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"):
        monkeypatch.setenv(name, "secret")
    env = finetune.child_environment(tmp_path / "home")
    assert "secret" not in env.values()
    assert env["HOME"] == str(tmp_path / "home") and env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"


def test_a_zip_whose_unpacked_size_passes_the_budget_writes_nothing(tmp_path: Path) -> None:
    """A zip bomb: 300 MB of zeros deflate to a few hundred kB; its directory says 300 MB."""
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("images/a.png", "w", force_zip64=True) as member,
    ):
        for _ in range(300):
            member.write(bytes(2**20))
    session = finetune.Session.new(tmp_path / "sessions")
    before = session.used_bytes()
    with pytest.raises(DataError, match=r"bomb\.zip unpacked needs 300\.0 MB but this session"):
        session.import_zip(str(bomb))
    assert session.used_bytes() == before == 0
    assert not (session.folder / "unpacked").exists()


def test_a_base_too_large_for_the_session_s_disk_is_refused_before_training(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(finetune, "MAX_BYTES", 2**20)  # 1 MB: dsb2018-unet's weights are more
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "p")
    session.keep(str(image), str(mask), "p")
    with pytest.raises(DataError, match=r"a fine-tune of dsb2018-unet needs .* MB but this"):
        session.finetune(BASE, "dsb2018-unet", seconds=2)
    assert list((session.folder / "models").iterdir()) == []
