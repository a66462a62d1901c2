"""A model that learns a visitor's images: the image/mask pairs they keep, a time-boxed fine-tune
of the chosen model on them (the command line's own `trainers.train --finetune`), the result
offered in that visitor's dropdown alone, and taken home as a zip of its run folder.

    session = Session.new(root)
    session.keep(image_file, mask_file, "cells")          # or session.import_zip(upload)
    token, label = session.finetune("/srv/weights/dsb2018-unet", "dsb2018-unet")
    session.export(token)                                  # a zip that zoo.from_pretrained loads

A session's pairs and models live in a private folder of its own, never listed to anyone else:
a model is reached through an unguessable token only its visitor's dropdown holds, and the
folder is deleted when the session ends (or its state expires, after an hour). Limits, set by
the host: `BIOSEG_FINETUNE_SECONDS` (90) per fine-tune, `BIOSEG_FINETUNE_PAIRS` (32) pairs and
`BIOSEG_FINETUNE_MB` (256) of disk per session. One fine-tune runs at a time on the server (the
page's queue shows the others their place).
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import shutil
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.readers import DataError, read_decoded, read_objects
from trainers.objects import components

SECONDS = float(os.environ.get("BIOSEG_FINETUNE_SECONDS", 90))
MAX_PAIRS = int(os.environ.get("BIOSEG_FINETUNE_PAIRS", 32))
MAX_BYTES = int(os.environ.get("BIOSEG_FINETUNE_MB", 256)) * 2**20
VALIDATE_FROM = 3  # pairs kept before one is held back for a validation Dice
REGISTRY: dict[str, Path] = {}  # token -> run folder, of every live session's models
_ONE_AT_A_TIME = threading.Lock()


@dataclass
class Session:
    """One visitor's kept pairs (`folder/pairs/images`, `.../masks`) and fine-tuned models
    (`folder/models/<token>`), by token, with their labels."""

    folder: Path
    labels: dict[str, str] = field(default_factory=dict)

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

    def keep(self, image_file: str, mask_file: str, name: str) -> str:
        """Keep an image with its mask (binary, or a label image: an id per object) as a pair;
        its name. The mask is kept as a 16-bit label image (`object_labels`), so that an
        object model can be fine-tuned on it as well as a plain one. A DataError naming the
        file when the mask does not fit, the image cannot be read or a limit is reached; the
        pairs kept before are untouched."""
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
            raise DataError(f"{name}: keeping it would pass this session's {MAX_BYTES >> 20} MB")
        return stem

    def drop(self, stem: str) -> None:
        """Forget one kept pair."""
        for kind in ("images", "masks"):
            (self.folder / "pairs" / kind / f"{stem}.png").unlink(missing_ok=True)

    def import_zip(self, path: str) -> list[str]:
        """Keep the pairs of a zip laid out as a `folder:` data set (images/NAME.EXT with
        masks/NAME.png or masks/NAME_mask.png); their names. Refused whole, nothing of it kept,
        for a member outside its folder, more files than the limit allows, or a pair that
        cannot be kept (its file named)."""
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > 2 * MAX_PAIRS:
                raise DataError(f"{Path(path).name}: {len(members)} files, more than the "
                                f"{2 * MAX_PAIRS} of {MAX_PAIRS} pairs")  # fmt: skip
            for member in members:
                parts = Path(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise DataError(f"{Path(path).name}: {member.filename} lies outside the zip")
            unpacked = self.folder / "unpacked"
            shutil.rmtree(unpacked, ignore_errors=True)
            archive.extractall(unpacked, members)
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

    def finetune(self, base: str, base_label: str, seconds: float = SECONDS) -> tuple[str, str]:
        """Fine-tune the model at `base` on the kept pairs for `seconds` (one at a time on the
        server); the new model's token and label ("dsb2018-unet + 3 of your images")."""
        from trainers.cli import USER_ERRORS, user_message
        from trainers.train import run_command

        count = len(self.pairs)
        if count == 0:
            raise DataError("no pairs are kept yet: keep an image with its mask first")
        token = f"yours-{secrets.token_hex(12)}"
        run = self.folder / "models" / token
        held_back = "0.34" if count >= VALIDATE_FROM else "0"
        with _ONE_AT_A_TIME:
            try:
                run_command(["--finetune", base, "--data", f"folder:{self.folder / 'pairs'}",
                             "--time-budget", f"{seconds:g}s", "--output", str(run),
                             "--workers", "0", "--val-fraction", held_back,
                             "--no-evaluate"])  # fmt: skip
            except USER_ERRORS as error:  # the command line's refusal, said on the page
                raise DataError(user_message(error)) from None
        label = f"{base_label} + {count} of your image{'s' if count > 1 else ''}"
        self.labels[token] = label
        REGISTRY[token] = run
        return token, label

    def validation_dice(self, token: str) -> float | None:
        """The fine-tuned model's best validation Dice, when a pair was held back."""
        with (REGISTRY[token] / "metrics.csv").open(newline="") as handle:
            values = [float(row["val_dice"]) for row in csv.DictReader(handle)]
        finite = [v for v in values if v == v]
        return max(finite) if finite else None

    def export(self, token: str) -> Path:
        """The fine-tuned run folder as a zip (weights, config, settings, metrics, model card)
        that `zoo.from_pretrained` loads once unpacked."""
        from trainers.model_card import model_card

        run = REGISTRY[token]
        card = model_card(run, self.labels[token])
        (run / "README.md").write_text(card, encoding="utf-8")
        archive = self.folder / f"{token}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for name in ("model.safetensors", "config.json", "train_config.json",
                         "metrics.csv", "README.md"):  # fmt: skip
                if (run / name).is_file():
                    out.write(run / name, f"{token}/{name}")
        return archive

    def end(self) -> None:
        """Delete everything of the session: pairs, models, zips."""
        for token in self.labels:
            REGISTRY.pop(token, None)
        shutil.rmtree(self.folder, ignore_errors=True)


def object_labels(mask_file: str) -> np.ndarray:
    """The objects of a kept mask as a label image: a label image's own ids, or, for a binary
    mask (one value besides 0, as the painted ones are), its 4-connected components."""
    labels = read_objects([mask_file])
    if np.unique(labels).size <= 2:
        labels = components(labels > 0)
    if labels.max() > np.iinfo(np.uint16).max:
        raise DataError(f"{Path(mask_file).name}: more than 65,535 objects")
    return labels


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
