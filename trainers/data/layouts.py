"""Data sets on disk, addressed as ``KIND:PATH`` strings, e.g. ``drive:../shared/data/DRIVE``.

Each kind knows its official layout and split:

- ``drive``: ``training/`` (20 images) is train, ``test/`` (20) is test; masks from
  ``1st_manual/``, field of view from ``mask/``.
- ``isbi2012``: ``images/N.png`` and ``masks/N.png``, N = 0..29; train is 0..24, test 25..29; the
  masks' zeros (membrane) are the foreground.
- ``chase``: CHASE_DB1, ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` in one folder; sorted by
  name, the first 20 images are train and the last 8 test.
- ``dsb2018``: ``stage1_train/<id>/images/<id>.png`` with the union of ``masks/*.png``, one file
  per nucleus (the objects); seeded split, 20 % test.
- ``kvasir``: Kvasir-SEG, ``images/*.jpg`` with ``masks/*.jpg``; seeded split, 10 % val, 10 % test.
- ``isic2018``: ISIC 2018 Task 1, ``ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_*.jpg``
  with ``ISIC2018_Task1_{...}_GroundTruth/ISIC_*_segmentation.png``; the official parts present
  are train, val and test; with the training part alone, a seeded split, 10 % val, 10 % test.
- ``folder``: ``images/`` and ``masks/`` with matching stems (a mask may add ``_mask``), split by
  ``train/ val/ test/`` subfolders (each with images/ and masks/) or a ``splits.json``
  ``{"train": [stems], "val": [...], "test": [...]}``; otherwise everything is train. Binary
  masks by default; a ``classes.json`` ``{"classes": ["background", "a", "b"], "palette":
  {"255,0,0": 1, ...}}`` (palette optional) makes masks class maps, or RGB colours per class.
  Without one, 16-bit (or 32-bit) masks other than 0/65535 are label images: one integer id per
  object, 0 background (as Cellpose, StarDist, napari and QuPath write them); their foreground
  is every object, and the object target (`DatasetSource.for_objects`) parts touching ones.

Seeded splits are deterministic and independent of the platform and Python version: samples are
ordered by the SHA-256 of ``f"{seed}:{id}"`` (seed 0), the first ``round(fraction * n)`` of that
order go to test, the next to val, and the rest to train; each split is then sorted by id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from zoo._checks import listing

from .readers import (
    DataError,
    MaskMode,
    Palette,
    read_image,
    read_mask,
    read_masks_union,
    read_objects,
    size_text,
)
from .targets import OBJECT_CLASSES, object_classes

__all__ = [
    "KINDS",
    "SPLITS",
    "DatasetSource",
    "Sample",
    "parse_spec",
    "seeded_split",
    "train_val_split",
]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
_VAL_TEST = {"test": 0.1, "val": 0.1}
_ISIC_PARTS = {"train": "Training", "val": "Validation", "test": "Test"}

Splits = dict[str, list["Sample"]]
Item = TypeVar("Item")


@dataclass(frozen=True)
class Sample:
    """One image with its mask file(s), merged by union, and optional field of view."""

    id: str
    image: Path
    masks: tuple[Path, ...]
    roi: Path | None = None
    invert: bool = False  # foreground is where the mask is 0 (ISBI 2012 membranes)


@dataclass(frozen=True)
class DatasetSource:
    """A data set on disk: its kind, root folder, class names and a way to list its splits."""

    kind: str
    root: Path
    class_names: tuple[str, ...]
    find: Callable[[Path], Splits] = field(repr=False, compare=False)
    palette: Palette | None = None  # RGB colour -> class, for colour-coded masks
    objects: bool = False  # the masks label each object (a file per object, or label images)
    object_target: bool = False  # trained on the object target (background, interior, rim, contact)

    @property
    def mask_mode(self) -> MaskMode:
        """ "objects" for the object target, "labels" for class maps (more than two classes, or
        a palette), else "binary"."""
        if self.object_target:
            return "objects"
        return "labels" if self.palette or len(self.class_names) > 2 else "binary"

    def for_objects(self) -> DatasetSource:
        """This data set with the object target (`trainers.data.targets`): its classes
        background, the thing, its boundary and its contacts, e.g. "nucleus boundary"."""
        if not self.objects:
            raise DataError(
                f"{self.kind}:{self.root}: its masks do not label each object (a mask file per "
                "object, or 16-bit label images in a folder: data set), so there are no objects "
                "to part"
            )
        thing = self.class_names[1]
        names = tuple(name.format(thing=thing) for name in OBJECT_CLASSES)
        return replace(self, class_names=names, object_target=True)

    def splits(self) -> Splits:
        """Samples per split ("train", "val", "test"), each sorted by id."""
        return self.find(self.root)


def parse_spec(spec: str) -> DatasetSource:
    """A ``DatasetSource`` from ``KIND:PATH``; the kinds are listed in ``KINDS``."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise ValueError(f"data set {spec!r} must look like KIND:PATH, e.g. drive:data/DRIVE")
    kind = kind.strip().lower()
    if kind not in _LAYOUTS:
        raise ValueError(f"unknown data set kind {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{spec}: no folder {root}")
    thing, find = _LAYOUTS[kind]
    if kind == "folder" and (root / "classes.json").is_file():
        names, palette = _classes_file(root / "classes.json")
        return DatasetSource(kind, root, names, find, palette)
    objects = kind == "dsb2018" or (kind == "folder" and _holds_label_images(find(root)))
    return DatasetSource(kind, root, ("background", thing), find, objects=objects)


def _holds_label_images(splits: Splits) -> bool:
    """Whether a folder data set's masks are label images: its first mask is 16- or 32-bit and
    holds other values than 0 and 65535 (a 16-bit binary mask)."""
    first = next((s.masks[0] for samples in splits.values() for s in samples), None)
    if first is None:
        return False
    try:
        with Image.open(first) as image:
            if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                return False
            top = image.getextrema()[1]
    except (OSError, ValueError):
        return False  # the readers name the file and its problem when it is read
    return top not in (0, 65535)


def _classes_file(path: Path) -> tuple[tuple[str, ...], Palette | None]:
    """Class names and optional palette of a folder data set's classes.json."""
    try:
        spec = json.loads(path.read_text())
        names = tuple(spec["classes"])
        palette = {
            tuple(int(v) for v in colour.split(",")): int(index)
            for colour, index in spec.get("palette", {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f'{path}: expected {{"classes": ["background", ...], "palette": {{"R,G,B": class}}}} '
            f"(palette optional); {type(error).__name__}: {error}"
        ) from None
    if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: 'classes' needs at least two names, got {list(names)}")
    bad = {c: i for c, i in palette.items() if len(c) != 3 or not 0 <= i < len(names)}
    if bad:
        raise DataError(
            f"{path}: palette entries {bad} are not 'R,G,B': class in [0, {len(names)})"
        )
    return names, palette or None


def train_val_split(
    samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, val) for data sets without a val split.

    Deterministic: the ``round(val_fraction * n)`` samples (at least 1) first in SHA-256 order of
    ``f"{seed}:{id}"`` are val, the rest train; both are sorted by id.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    parts = seeded_split(samples, {"val": val_fraction}, seed)
    return parts["train"], parts["val"]


def seeded_split(
    samples: Sequence[Item], fractions: dict[str, float], seed: int
) -> dict[str, list[Item]]:
    """`samples` (anything with an `id`: images, or volume cases) parted by the module's seeded
    rule: each of `fractions` in its order (at least one each), the rest train."""
    order = sorted(samples, key=lambda s: hashlib.sha256(f"{seed}:{s.id}".encode()).hexdigest())
    parts: dict[str, list[Item]] = {}
    start = 0
    for name, fraction in fractions.items():
        count = max(1, math.floor(fraction * len(order) + 0.5))
        if start + count >= len(order):
            raise DataError(
                f"{len(order)} samples are too few to hold out {fraction:.0%} as {name} "
                "and keep some for training"
            )
        parts[name] = _by_id(order[start : start + count])
        start += count
    parts["train"] = _by_id(order[start:])
    return {split: parts[split] for split in SPLITS if split in parts}


def _by_id(samples: Iterable[Item]) -> list[Item]:
    return sorted(samples, key=lambda s: s.id)


def _listing(items: Sequence[object]) -> str:
    return f"{len(items)}: {listing(items)}"


def _require(paths: Iterable[Path]) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"missing files ({_listing(missing)})")


def _images(folder: Path, pattern: str = "*") -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found = sorted(
        p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not found:
        raise DataError(f"{folder}: no images matching {pattern}")
    return found


def _pair(images_dir: Path, masks_dir: Path, mask_tag: str = "_mask") -> list[Sample]:
    """Pair images and masks by stem; a mask stem may end in ``mask_tag``. Unpaired files fail."""
    images = _by_stem(_images(images_dir), "")
    masks = _by_stem(_images(masks_dir), mask_tag)
    problems = []
    if no_mask := sorted(images.keys() - masks.keys()):
        problems.append(f"images without a mask in {masks_dir} ({_listing(no_mask)})")
    if no_image := sorted(masks.keys() - images.keys()):
        problems.append(f"masks without an image in {images_dir} ({_listing(no_image)})")
    if problems:
        raise DataError("; ".join(problems))
    return [Sample(stem, images[stem], (masks[stem],)) for stem in sorted(images)]


def _by_stem(files: list[Path], tag: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        stem = path.stem.removesuffix(tag) if tag else path.stem
        if stem in found:
            raise DataError(f"{path} and {found[stem]} both stand for {stem!r}; keep one")
        found[stem] = path
    return found


def _drive(root: Path) -> Splits:
    return {"train": _drive_part(root / "training"), "test": _drive_part(root / "test")}


def _drive_part(folder: Path) -> list[Sample]:
    name = folder.name
    samples = []
    for image in _images(folder / "images", f"*_{name}.tif"):
        number = image.name.split("_")[0]
        mask = folder / "1st_manual" / f"{number}_manual1.gif"
        roi = folder / "mask" / f"{number}_{name}_mask.gif"
        samples.append(Sample(number, image, (mask,), roi))
    _require(path for s in samples for path in (*s.masks, s.roi) if path is not None)
    return samples


def _isbi2012(root: Path) -> Splits:
    samples = [
        Sample(str(n), root / "images" / f"{n}.png", (root / "masks" / f"{n}.png",), invert=True)
        for n in range(30)
    ]
    _require(path for s in samples for path in (s.image, *s.masks))
    return {"train": samples[:25], "test": samples[25:]}


def _chase(root: Path) -> Splits:
    images = _images(root, "Image_*.jpg")
    if len(images) != 28:
        raise DataError(f"{root}: CHASE_DB1 has 28 images Image_*.jpg, found {len(images)}")
    samples = [Sample(p.stem, p, (p.with_name(f"{p.stem}_1stHO.png"),)) for p in images]
    _require(s.masks[0] for s in samples)
    return {"train": samples[:20], "test": samples[20:]}


def _dsb2018(root: Path) -> Splits:
    base = root / "stage1_train"
    if not base.is_dir():
        raise DataError(f"{root}: expected stage1_train/<id>/images and masks folders")
    samples = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        masks = tuple(sorted((folder / "masks").glob("*.png")))
        if not masks:
            raise DataError(f"{folder / 'masks'}: no mask files *.png")
        samples.append(Sample(folder.name, folder / "images" / f"{folder.name}.png", masks))
    _require(s.image for s in samples)
    return seeded_split(samples, {"test": 0.2}, seed=0)


def _kvasir(root: Path) -> Splits:
    return seeded_split(_pair(root / "images", root / "masks"), _VAL_TEST, seed=0)


def _isic2018(root: Path) -> Splits:
    parts = {
        split: _pair(inputs, root / f"ISIC2018_Task1_{part}_GroundTruth", "_segmentation")
        for split, part in _ISIC_PARTS.items()
        if (inputs := root / f"ISIC2018_Task1-2_{part}_Input").is_dir()
    }
    if "train" not in parts:
        raise DataError(f"{root}: no ISIC2018_Task1-2_Training_Input folder")
    return parts if len(parts) > 1 else seeded_split(parts["train"], _VAL_TEST, seed=0)


def _folder(root: Path) -> Splits:
    found = [split for split in SPLITS if (root / split / "images").is_dir()]
    if found:
        return {split: _pair(root / split / "images", root / split / "masks") for split in found}
    samples = _pair(root / "images", root / "masks")
    splits_file = root / "splits.json"
    return _from_splits_file(splits_file, samples) if splits_file.is_file() else {"train": samples}


def _from_splits_file(path: Path, samples: list[Sample]) -> Splits:
    try:
        listed = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(listed, dict) or not set(listed) <= set(SPLITS):
        raise DataError(f"{path}: expected an object with keys among {SPLITS}")
    by_id = {s.id: s for s in samples}
    seen: set[str] = set()
    for split, stems in listed.items():
        if not isinstance(stems, list) or not all(isinstance(stem, str) for stem in stems):
            raise DataError(f"{path}: {split!r} must be a list of file stems")
        if not stems:
            raise DataError(f"{path}: {split!r} lists no stems; list some or leave the split out")
        if unknown := [stem for stem in stems if stem not in by_id]:
            raise DataError(f"{path}: {split!r} lists stems with no image ({_listing(unknown)})")
        if twice := sorted(seen.intersection(stems) | {x for x in stems if stems.count(x) > 1}):
            raise DataError(f"{path}: stems listed more than once ({_listing(twice)})")
        seen.update(stems)
    unassigned = sorted(by_id.keys() - seen)
    if unassigned:
        raise DataError(f"{path}: images in no split ({_listing(unassigned)}); add them to one")
    return {split: _by_id(by_id[stem] for stem in stems) for split, stems in listed.items()}


_LAYOUTS: dict[str, tuple[str, Callable[[Path], Splits]]] = {
    "drive": ("vessel", _drive),
    "isbi2012": ("membrane", _isbi2012),
    "chase": ("vessel", _chase),
    "dsb2018": ("nucleus", _dsb2018),
    "kvasir": ("polyp", _kvasir),
    "isic2018": ("lesion", _isic2018),
    "folder": ("foreground", _folder),
}
KINDS = tuple(_LAYOUTS)


def read_sample(
    sample: Sample, *, mask_mode: MaskMode = "binary", palette: Palette | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (float32 H x W x C), mask (bool or int64 H x W) and roi (bool H x W) of a sample.

    Several masks are merged by union; ``sample.invert`` makes the foreground the mask's zeros;
    a sample without a roi gets an all-True one. Sizes must agree.
    """
    if mask_mode == "objects":
        return _sample_of_objects(sample)
    if mask_mode == "labels" and (sample.invert or len(sample.masks) != 1):
        raise DataError(
            f"{sample.image}: label masks need exactly one mask file and no inversion; "
            "use mask_mode='binary' for this data set"
        )
    image = read_image(sample.image)
    if len(sample.masks) == 1:
        mask = read_mask(sample.masks[0], mode=mask_mode, palette=palette)
    else:
        mask = read_masks_union(sample.masks)
    if sample.invert:
        mask = ~mask
    roi = np.ones(mask.shape, bool) if sample.roi is None else read_mask(sample.roi)
    for path, array in ((sample.masks[0], mask), (sample.roi, roi)):
        if array.shape != image.shape[:2]:
            raise DataError(
                f"{path}: mask is {size_text(array)} but image {sample.image} is {size_text(image)}"
            )
    return image, mask, roi


def _sample_of_objects(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, the training target of its objects (background, interior, boundary: trainers.data.
    targets) and roi."""
    image, labels = read_image(sample.image), read_objects(sample.masks)
    if labels.shape != image.shape[:2]:
        raise DataError(
            f"{sample.masks[0]}: mask is {size_text(labels)} but image {sample.image} is "
            f"{size_text(image)}"
        )
    return image, object_classes(labels), np.ones(labels.shape, bool)
