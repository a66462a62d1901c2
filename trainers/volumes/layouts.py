"""Data sets of volumes on disk, addressed as ``KIND:PATH`` like the image ones.

- ``msd``: the Medical Segmentation Decathlon's layout: ``dataset.json`` (``modality`` per channel,
  ``labels`` by value, ``training`` pairs), ``imagesTr/CASE.nii.gz`` (3D, or 4D with the
  modalities on the last axis), ``labelsTr/CASE.nii.gz``.
- ``nnunet``: nnU-Net v2's raw layout: ``dataset.json`` (``channel_names``, ``labels`` by name,
  ``file_ending``), ``imagesTr/CASE_0000.nii.gz`` one file per channel, ``labelsTr/CASE.nii.gz``.
- ``folder`` holding volumes: ``images/`` and ``labels/`` (or ``masks/``) with matching names
  (NIfTI, NRRD or MHA); a ``dataset.json`` in either layout's style names modality and labels.

Cases are split once, by case (never slices of one case on both sides): a ``splits.json``
``{"train": [ids], "val": [...], "test": [...]}`` in the data set's folder wins; otherwise the
image data sets' seeded rule (`trainers.data.layouts.seeded_split`, seed 0) holds out 20 % as test
and 10 % as validation, leaving 70 % for training. The run writes the split it used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainers.data.errors import DataError
from trainers.data.layouts import SPLITS, seeded_split
from trainers.volumes.image import is_volume_file, volume_stem

VOLUME_KINDS = ("msd", "nnunet")
FRACTIONS = {"test": 0.2, "val": 0.1}


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) (one per channel, or one 4D file) and its label file."""

    id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class VolumeSource:
    """A data set of volumes: where it lies, its classes and channels, and its cases by split."""

    kind: str
    root: Path
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    cases: dict[str, list[Case]]

    @property
    def modality(self) -> str:
        """The first channel's modality as the field names it ("CT", "MR", ...)."""
        return modality_of(self.channel_names[0])

    def splits(self) -> dict[str, list[Case]]:
        return self.cases

    def split_listing(self) -> dict[str, list[str]]:
        """The case ids of each split, as written in the run folder (`split.json`)."""
        return {split: [case.id for case in cases] for split, cases in self.cases.items()}


def modality_of(name: str) -> str:
    """A channel's name as a modality: CT for "CT" (any case), MR for MRI names, else the name."""
    upper = name.strip().upper()
    if upper == "CT":
        return "CT"
    if upper in ("MR", "MRI", "T1", "T2", "FLAIR", "T1GD", "T1W", "T2W", "ADC", "DWI"):
        return "MR"
    return upper


def is_volume_spec(spec: str) -> bool:
    """A ``KIND:PATH`` naming volumes: an msd or nnunet kind, or a folder whose images are
    volume files."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind in VOLUME_KINDS:
        return True
    images = Path(path).expanduser() / "images"
    return kind == "folder" and images.is_dir() and any(map(is_volume_file, images.iterdir()))


def parse_volume_spec(spec: str) -> VolumeSource:
    """The data set of volumes `spec` names, its cases split (see the module's rule)."""
    kind, _, path = spec.partition(":")
    kind, root = kind.strip().lower(), Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{spec}: no folder {root}")
    description = _description(root, required=kind != "folder")
    if kind == "msd":
        cases = _msd_cases(root, description)
    elif kind == "nnunet":
        cases = _nnunet_cases(root, description)
    else:
        cases = _folder_cases(root)
    if not cases:
        raise DataError(f"{spec}: no labelled cases found")
    return VolumeSource(
        kind,
        root,
        _class_names(root, description, cases),
        _channel_names(description),
        _split(root, cases),
    )


def _description(root: Path, *, required: bool) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        if required:
            raise DataError(f"{root}: no dataset.json (this layout names its labels there)")
        return {}
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(found, dict):
        raise DataError(f"{path}: expected a JSON object")
    return found


def _channel_names(description: dict) -> tuple[str, ...]:
    """Channel names in order: nnU-Net's `channel_names` or the Decathlon's `modality`."""
    named = description.get("channel_names") or description.get("modality") or {"0": ""}
    return tuple(str(named[key]) for key in sorted(named, key=int))


def _class_names(root: Path, description: dict, cases: list[Case]) -> tuple[str, ...]:
    """Class names by value: the Decathlon's {"1": "name"} or nnU-Net's {"name": 1}; without
    labels named, "background" and "foreground"."""
    labels = description.get("labels")
    if not labels:
        return ("background", "foreground")
    try:
        by_value = (
            {int(key): str(name) for key, name in labels.items()}
            if all(str(key).isdigit() for key in labels)
            else {int(value): str(name) for name, value in labels.items()}
        )
    except (TypeError, ValueError):
        raise DataError(f"{root / 'dataset.json'}: labels must map values to names") from None
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(
            f"{root / 'dataset.json'}: label values must run 0, 1, 2 ... without gaps, found "
            f"{sorted(by_value)}"
        )
    return tuple(by_value[value] for value in range(len(by_value)))


def _msd_cases(root: Path, description: dict) -> list[Case]:
    listed = description.get("training")
    if not isinstance(listed, list) or not listed:
        raise DataError(f"{root / 'dataset.json'}: no 'training' list of image and label pairs")
    cases = []
    for entry in listed:
        image, label = root / entry["image"], root / entry["label"]
        cases.append(Case(volume_stem(image), (image,), label))
    _require(root, [path for case in cases for path in (*case.images, case.label)])
    return cases


def _nnunet_cases(root: Path, description: dict) -> list[Case]:
    ending = str(description.get("file_ending", ".nii.gz"))
    channels = len(_channel_names(description))
    labels = root / "labelsTr"
    if not labels.is_dir():
        raise DataError(f"{root}: no labelsTr/ folder")
    cases = []
    for label in sorted(labels.glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        images = tuple(
            root / "imagesTr" / f"{case}_{index:04d}{ending}" for index in range(channels)
        )
        cases.append(Case(case, images, label))
    _require(root, [path for case in cases for path in case.images])
    return cases


def _folder_cases(root: Path) -> list[Case]:
    labels_dir = next((root / name for name in ("labels", "masks") if (root / name).is_dir()), None)
    if labels_dir is None:
        raise DataError(f"{root}: no labels/ (or masks/) folder beside images/")
    images = {volume_stem(p): p for p in (root / "images").iterdir() if is_volume_file(p)}
    labels = {volume_stem(p): p for p in labels_dir.iterdir() if is_volume_file(p)}
    if unpaired := sorted(images.keys() ^ labels.keys()):
        raise DataError(f"{root}: volumes without a partner in images/ and labels/: {unpaired[:8]}")
    return [Case(stem, (images[stem],), labels[stem]) for stem in sorted(images)]


def _require(root: Path, paths: list[Path]) -> None:
    if missing := [path for path in paths if not path.is_file()]:
        shown = ", ".join(str(path.relative_to(root)) for path in missing[:5])
        raise DataError(f"{root}: {len(missing)} listed files are missing ({shown})")


def _split(root: Path, cases: list[Case]) -> dict[str, list[Case]]:
    listed = root / "splits.json"
    if not listed.is_file():
        return seeded_split(cases, FRACTIONS, seed=0)
    by_id = {case.id: case for case in cases}
    try:
        named = json.loads(listed.read_text())
        parts = {
            split: [by_id[case] for case in named[split]] for split in SPLITS if split in named
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{listed}: not a split of this data set's cases ({error})") from None
    if "train" not in parts:
        raise DataError(f"{listed}: no 'train' cases")
    named_ids = [case.id for split in parts.values() for case in split]
    if len(set(named_ids)) != len(named_ids) or set(named_ids) != set(by_id):
        twice = sorted({i for i in named_ids if named_ids.count(i) > 1})
        unnamed = sorted(set(by_id) - set(named_ids))
        raise DataError(
            f"{listed}: every case must be in exactly one split (twice: {twice[:5]}, in none: "
            f"{unnamed[:5]})"
        )
    return parts
