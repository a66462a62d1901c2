"""A model that learns a visitor's images: the image/mask pairs they keep, a time-boxed fine-tune
of the chosen model on them (the command line's own `trainers.train --finetune`, in a child
process), the result offered in that visitor's dropdown alone, and taken home as a zip.

    session = Session.new(root)
    session.keep(image_file, mask_file, "cells")          # or session.import_zip(upload)
    token, label = session.finetune(base_folder, "dsb2018-unet", client="10.0.0.7")
    session.models[token]                                  # the run folder, for this session only
    session.export(token)                                  # a zip that zoo.from_pretrained loads

A session's pairs and models live in a private folder of its own (`root/session-<random>`),
which nothing else sweeps, and are reached only through the session object the visitor's page
holds: a model's token means nothing to anyone else. Every byte the session writes counts
against its disk budget: kept pairs, an unpacked zip (its uncompressed total read from the zip's
directory before a byte is written), fine-tuned models (their checkpoints deleted), exports and
the engine's exported graphs.

A fine-tune runs `python -m trainers.train` in a fresh interpreter (spawned, never forked from
the threaded server), with no credentials in its environment, offline, its time capped and its
resident memory watched (it is killed above the limit: an address-space limit would break
torch, which reserves far more address space than it uses). One runs at a time on the server;
a session may have one running or waiting, a client address a few, the server a few more; the
rest are refused at once with a message.

Limits, set by the host: `BIOSEG_FINETUNE_SECONDS` (90) per fine-tune, `BIOSEG_FINETUNE_PAIRS`
(32) pairs and `BIOSEG_FINETUNE_MB` (256) of disk per session, `BIOSEG_FINETUNE_MEMORY_MB`
(3072) of resident memory for the child.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.download import members_outside
from trainers.data.readers import DataError, read_decoded, read_objects
from trainers.scores.objects import components

SECONDS = float(os.environ.get("BIOSEG_FINETUNE_SECONDS", 90))
MAX_PAIRS = int(os.environ.get("BIOSEG_FINETUNE_PAIRS", 32))
MAX_BYTES = int(os.environ.get("BIOSEG_FINETUNE_MB", 256)) * 2**20
MAX_MEMORY = int(os.environ.get("BIOSEG_FINETUNE_MEMORY_MB", 3072)) * 2**20
STARTUP_SECONDS = 90  # the child's imports, data and saving, beside its training time box
KEPT_FILES = ("model.safetensors", "config.json", "train_config.json", "metrics.csv", "README.md")
"""What stays of a fine-tune's run folder: a model that loads, its settings and its record."""
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Session:
    """One visitor's kept pairs (`folder/pairs/images`, `.../masks`) and fine-tuned models
    (`models`: token -> run folder, `labels`: token -> label)."""

    folder: Path
    labels: dict[str, str] = field(default_factory=dict)
    models: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def new(cls, root: Path) -> Session:
        folder = root / f"session-{secrets.token_hex(16)}"
        for part in ("pairs/images", "pairs/masks", "models"):
            (folder / part).mkdir(parents=True)
        return cls(folder)

    @property
    def pairs(self) -> list[str]:
        """The kept pairs' names, sorted."""
        return sorted(p.stem for p in (self.folder / "pairs" / "masks").glob("*.png"))

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())

    def check_room(self, needed: int, what: str) -> None:
        """A DataError unless `needed` more bytes fit this session's disk budget."""
        used = self.used_bytes()
        if used + needed > MAX_BYTES:
            raise DataError(
                f"{what} needs {_mb(needed)} but this session has {_mb(MAX_BYTES - used)} of "
                f"its {_mb(MAX_BYTES)} left: drop pairs or models first"
            )

    def keep(self, image_file: str, mask_file: str, name: str) -> str:
        """Keep an image with its mask (binary, or a label image: an id per object) as a pair;
        its name. The mask is kept as a label image (`object_labels`), so that an object model
        can be fine-tuned on it as well as a plain one. Both are read under the process's pixel
        limit. A DataError naming the file when the mask does not fit, the image cannot be read
        or a limit is reached; the pairs kept before are untouched."""
        if len(self.pairs) >= MAX_PAIRS:
            raise DataError(f"{MAX_PAIRS} pairs are kept already (the limit): drop one first")
        pixels = read_decoded(image_file).pixels
        mask = object_labels(mask_file)
        if mask.shape != pixels.shape[:2]:
            raise DataError(
                f"{Path(mask_file).name}: the mask is {mask.shape[1]}x{mask.shape[0]} pixels but "
                f"the image is {pixels.shape[1]}x{pixels.shape[0]}"
            )
        stem = _free_name(self.pairs, name)
        image = np.rint(pixels * 255).astype(np.uint8)
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
            self.folder / "pairs" / "images" / f"{stem}.png"
        )
        Image.fromarray(mask.astype(np.uint16)).save(
            self.folder / "pairs" / "masks" / f"{stem}.png"
        )
        if self.used_bytes() > MAX_BYTES:
            self.drop(stem)
            raise DataError(f"{name}: keeping it would pass this session's {_mb(MAX_BYTES)}")
        return stem

    def drop(self, stem: str) -> None:
        """Forget one kept pair."""
        for kind in ("images", "masks"):
            (self.folder / "pairs" / kind / f"{stem}.png").unlink(missing_ok=True)

    def import_zip(self, path: str) -> list[str]:
        """Keep the pairs of a zip laid out as a `folder:` data set (images/NAME.EXT with
        masks/NAME.png or masks/NAME_mask.png); their names. Refused whole, nothing of it
        written, for a member outside its folder, more files than the limit allows, or an
        uncompressed total beyond the session's disk budget (read from the zip's directory:
        the reader stops at each member's stated size); refused whole, nothing kept, for a
        pair that cannot be kept (its file named)."""
        name = Path(path).name
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{name}: not a readable zip ({error})") from None
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > 2 * MAX_PAIRS:
                raise DataError(
                    f"{name}: {len(members)} files, more than the "
                    f"{2 * MAX_PAIRS} of {MAX_PAIRS} pairs"
                )
            if outside := members_outside([m.filename for m in members]):
                raise DataError(f"{name}: {outside[0]} lies outside the zip")
            self.check_room(sum(m.file_size for m in members), f"{name} unpacked")
            unpacked = self.folder / "unpacked"
            shutil.rmtree(unpacked, ignore_errors=True)
            try:
                archive.extractall(unpacked, members)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                shutil.rmtree(unpacked, ignore_errors=True)
                raise DataError(f"{name}: a member could not be unpacked ({error})") from None
        kept: list[str] = []
        try:
            for image, mask in _pairs(unpacked):
                kept.append(self.keep(str(image), str(mask), image.stem))
            return kept
        except DataError:
            for stem in kept:  # all or nothing: the zip's pairs kept so far are dropped again
                self.drop(stem)
            raise
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)

    def finetune(
        self,
        base: Path,
        base_label: str,
        *,
        client: str = "",
        seconds: float = SECONDS,
        progress: Callable[[float], None] | None = None,
    ) -> tuple[str, str]:
        """Fine-tune the model in the local folder `base` (loaded by the caller through its own
        guards) on the kept pairs for `seconds`, in a child process, one at a time on the
        server (`client`: the visitor's address, for the queue's limits); the new model's
        token and label ("dsb2018-unet + 3 of your images")."""
        count = len(self.pairs)
        if count == 0:
            raise DataError("no pairs are kept yet: keep an image with its mask first")
        self.check_room(finetune_bytes(base), f"a fine-tune of {base_label}")
        token = f"yours-{secrets.token_hex(12)}"
        run = self.folder / "models" / token
        argv = [
            "--finetune",
            str(base),
            "--data",
            f"folder:{self.folder / 'pairs'}",
            "--time-budget",
            f"{seconds:g}s",
            "--output",
            str(run),
            "--workers",
            "0",
            "--no-evaluate",
        ]
        with QUEUE.turn(self.folder.name, client):
            try:
                run_child(argv, self.folder, seconds + STARTUP_SECONDS, progress, seconds)
            except DataError:
                shutil.rmtree(run, ignore_errors=True)
                raise
        _trim(run)
        if self.used_bytes() > MAX_BYTES:
            shutil.rmtree(run, ignore_errors=True)
            raise DataError(f"the fine-tuned model would pass this session's {_mb(MAX_BYTES)}")
        label = f"{base_label} + {count} of your image{'s' if count > 1 else ''}"
        self.labels[token], self.models[token] = label, run
        return token, label

    def validation_dice(self, token: str) -> float | None:
        """The fine-tuned model's best Dice on the pairs held back (with fewer than
        `trainers.fit.plan_finetune.FEW_PAIRS` kept: on the training pairs themselves)."""
        with (self.models[token] / "metrics.csv").open(newline="") as handle:
            values = [float(row["val_dice"]) for row in csv.DictReader(handle)]
        finite = [v for v in values if v == v]
        return max(finite) if finite else None

    def export(self, token: str) -> Path:
        """The fine-tuned run folder as a zip (weights, config, settings, metrics, model card)
        that `zoo.from_pretrained` loads once unpacked; made once."""
        from trainers.hub.model_card import run_card

        run, archive = self.models[token], self.folder / f"{token}.zip"
        if archive.is_file():
            return archive
        (run / "README.md").write_text(run_card(run, self.labels[token]), encoding="utf-8")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for name in KEPT_FILES:
                if (run / name).is_file():
                    out.write(run / name, f"{token}/{name}")
        return archive

    def end(self) -> None:
        """Delete everything of the session: pairs, models, zips, exported graphs."""
        self.labels.clear()
        self.models.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class FinetuneQueue:
    """The fine-tunes running or waiting on this server: one runs at a time; a session may have
    one, a client address `per_client`, the server `waiting` in all; more are refused at once."""

    def __init__(self, per_client: int = 2, waiting: int = 6) -> None:
        self.per_client, self.waiting = per_client, waiting
        self._guard, self._running = threading.Lock(), threading.Lock()
        self._sessions: set[str] = set()
        self._clients: Counter[str] = Counter()

    @contextlib.contextmanager
    def turn(self, session: str, client: str) -> Iterator[None]:
        """Wait for the one fine-tune slot; a DataError at once where a limit is reached."""
        with self._guard:
            if session in self._sessions:
                raise DataError(
                    "a fine-tune of yours is already running or waiting: wait for it to finish"
                )
            if self._clients[client] >= self.per_client:
                raise DataError(
                    f"{self.per_client} fine-tunes from your address are already "
                    "running or waiting: wait for one to finish"
                )
            if len(self._sessions) >= self.waiting:
                raise DataError(
                    f"the server has {self.waiting} fine-tunes running or waiting, "
                    "its limit: try again in a few minutes"
                )
            self._sessions.add(session)
            self._clients[client] += 1
        try:
            with self._running:
                yield
        finally:
            with self._guard:
                self._sessions.discard(session)
                self._clients[client] -= 1
                if self._clients[client] <= 0:
                    del self._clients[client]


QUEUE = FinetuneQueue()

# Passed on to the child as they are: what the interpreter, its libraries and threads need.
# Nothing else: the host's tokens and keys (HF_TOKEN, cloud credentials, ...) stay behind.
INHERITED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BIOSEG_MAX_PIXELS",
)


def child_environment(home: Path) -> dict[str, str]:
    """The fine-tune's environment: the few variables of INHERITED, a home of its own (so no
    saved Hub login is found), offline (its base is a local folder), no implicit token."""
    home.mkdir(parents=True, exist_ok=True)
    kept = {name: os.environ[name] for name in INHERITED if name in os.environ}
    return {
        **kept,
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(home),
    }


def run_child(
    argv: list[str],
    folder: Path,
    limit_seconds: float,
    progress: Callable[[float], None] | None = None,
    expected_seconds: float = 1.0,
) -> None:
    """`python -m trainers.train ARGV` in a fresh interpreter, in `folder`'s `home`; killed past
    `limit_seconds` or MAX_MEMORY of resident memory. Its refusal, a kill or a crash is a
    DataError saying why; `progress(fraction)` is told of the time spent."""
    home = folder / "home"
    log = folder / "finetune.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainers.train", *argv],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_environment(home),
            start_new_session=True,
        )
        try:
            reason = _watch(process, limit_seconds, progress, expected_seconds)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            shutil.rmtree(home, ignore_errors=True)
    text = log.read_text(encoding="utf-8", errors="replace")
    log.unlink(missing_ok=True)
    if reason:
        raise DataError(f"the fine-tune was stopped: {reason}")
    if process.returncode != 0:
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        said = errors[-1].removeprefix("error: ") if errors else _last_line(text)
        raise DataError(f"the fine-tune failed: {said}")


def _watch(
    process: subprocess.Popen,
    limit_seconds: float,
    progress: Callable[[float], None] | None,
    expected_seconds: float,
) -> str:
    """Wait for `process`; why it had to be stopped, or "" when it ended by itself."""
    start = time.monotonic()
    while process.poll() is None:
        elapsed = time.monotonic() - start
        if elapsed > limit_seconds:
            return f"it ran past {limit_seconds:g} s"
        if (resident := resident_bytes(process.pid)) > MAX_MEMORY:
            return f"it used {_mb(resident)} of memory, over the limit of {_mb(MAX_MEMORY)}"
        if progress:
            progress(min(elapsed / max(expected_seconds, 1e-9), 1.0))
        time.sleep(0.25)
    return ""


def resident_bytes(pid: int) -> int:
    """The resident memory of process `pid` (Linux's /proc; 0 where there is none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def finetune_bytes(base: Path) -> int:
    """What a fine-tune of the model in `base` writes at most: its weights, and a checkpoint of
    weights with Adam's two moments (deleted afterwards), plus a megabyte of records."""
    weights = (base / "model.safetensors").stat().st_size
    return 5 * weights + 2**20


def _trim(run: Path) -> None:
    """Delete all but KEPT_FILES of a run folder (the checkpoint with its optimizer state)."""
    for path in run.iterdir():
        if path.name not in KEPT_FILES:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def object_labels(mask_file: str) -> np.ndarray:
    """The objects of a kept mask as a label image: a label image's own ids, or, for a binary
    mask (one value besides 0, as the painted ones are), its 4-connected components."""
    labels = read_objects([mask_file])
    if np.unique(labels).size <= 2:
        labels = components(labels > 0)
    if labels.max() > np.iinfo(np.uint16).max:
        raise DataError(f"{Path(mask_file).name}: more than 65,535 objects")
    return labels


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "it exited with no message"


def _free_name(taken: list[str], name: str) -> str:
    stem, number = name, 1
    while stem in taken:
        number += 1
        stem = f"{name}-{number}"
    return stem


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of an unpacked folder data set: images/ and masks/ anywhere inside."""
    images = {p.stem: p for p in folder.rglob("images/*") if p.is_file()}
    masks = {}
    for path in folder.rglob("masks/*"):
        with contextlib.suppress(ValueError):
            masks[path.stem.removesuffix("_mask")] = path
    if not images:
        raise DataError("the zip holds no images/ folder (a folder: data set: images/, masks/)")
    if missing := sorted(images.keys() - masks.keys()):
        raise DataError(f"images without a mask in the zip: {', '.join(missing[:10])}")
    return [(images[stem], masks[stem]) for stem in sorted(images)]
