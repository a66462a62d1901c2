"""DICOM series: a folder (or a zip) of one file per slice, read as one volume.

    for series in list_series("study/"):   # each SeriesInstanceUID, its description and slices
        print(series.uid, series.description, len(series.files))
    image, modality = read_series("study/", series="1.2.840...")

pydicom reads the headers (fast: no pixels) to group the files by SeriesInstanceUID, check that
every slice has one orientation and size, and order them by position along the slice normal;
SimpleITK's series reader then decodes them, applying the rescale to Hounsfield units and
taking the slice spacing from the positions (never from SliceThickness). A gap in the positions
is refused, saying where. No patient name or id is read into a message or a name.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers.data.errors import DataError

MAX_ZIP_BYTES = 2 * 1024**3  # a zip's files, uncompressed, at most
BYTES_PER_VOXEL = 4  # a series' slices, headers included, hold no more than this a voxel
HEADROOM = 64 * 1024**2  # and this for the files that are not slices
MAX_ZIP_FILES = 5000
GAP_FACTOR = 1.5  # a step between slices this much above the usual one is a missing slice


@dataclass(frozen=True)
class Series:
    """One series in a folder: its UID, description and modality, and its files in slice order
    (ascending position along the slice normal)."""

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]
    positions: tuple[float, ...]


def holds_series(folder: Path) -> bool:
    """A folder whose DICOM files make one or more series of at least two slices: a volume, not a
    folder of unrelated 2D images (each its own series, or without positions)."""
    try:
        return any(len(series.files) > 1 for series in list_series(folder))
    except DataError:
        return False


def list_series(folder: str | Path) -> list[Series]:
    """The image series in `folder` (its files, not subfolders), largest first. Files that are
    not DICOM, or DICOM without pixels or position, are passed over."""
    folder = Path(folder)
    headers: dict[str, list[tuple[Path, object]]] = {}
    for path in sorted(folder.iterdir()):
        header = _header(path)
        if header is not None:
            headers.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
    found = [_series(folder, uid, members) for uid, members in headers.items()]
    return sorted(found, key=lambda series: -len(series.files))


def read_series(path: str | Path, *, series: str | None = None, max_voxels: int):
    """The SimpleITK image of one series in a folder or a zip, and its modality; `series` names
    it by UID (or the start of one) where there are several."""
    path = Path(path)
    limit = min(MAX_ZIP_BYTES, max_voxels * BYTES_PER_VOXEL + HEADROOM)
    with _unpacked(path, limit) as folder:
        chosen = choose_series(path, list_series(folder), series)
        return _decoded(path, chosen, max_voxels), chosen.modality


def choose_series(path: Path, found: list[Series], wanted: str | None) -> Series:
    """The series `wanted` names (a UID or its start), or the only one; a DataError listing
    them otherwise."""
    if not found:
        raise DataError(f"{path}: no DICOM image series (no DICOM files with pixels and positions)")
    if wanted:
        matches = [series for series in found if series.uid.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        raise DataError(
            f"{path}: {len(matches)} series match '{wanted}'; the folder holds: {describe(found)}"
        )
    if len(found) > 1:
        raise DataError(
            f"{path}: {len(found)} series, never mixed: choose one by its UID (--series); "
            f"{describe(found)}"
        )
    return found[0]


def describe(found: list[Series]) -> str:
    """The series as `UID (modality, description, N slices)`, one after another."""
    return "; ".join(
        f"{series.uid} ({series.modality or '?'}, {series.description or 'no description'}, "
        f"{len(series.files)} slices)"
        for series in found
    )


def _header(path: Path):
    import pydicom

    if not path.is_file():
        return None
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, TypeError):
        return None
    needed = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows")
    return header if all(key in header for key in needed) else None


def _series(folder: Path, uid: str, members: list[tuple[Path, object]]) -> Series:
    """The members of one series checked (one orientation, one size) and ordered along the
    slice normal."""
    first_path, first = members[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    size = (int(first.Rows), int(first.Columns))
    for path, header in members:
        cosines = np.asarray(header.ImageOrientationPatient, dtype=float)
        if not np.allclose(cosines, orientation, atol=1e-4):
            raise DataError(
                f"{folder}: series {uid} mixes orientations ({path.name}: "
                f"{cosines.round(4).tolist()} against {first_path.name}: "
                f"{orientation.round(4).tolist()})"
            )
        if (int(header.Rows), int(header.Columns)) != size:
            raise DataError(
                f"{folder}: series {uid} mixes slice sizes ({path.name}: "
                f"{header.Rows}x{header.Columns} against {first_path.name}: {size[0]}x{size[1]})"
            )
    normal = np.cross(orientation[:3], orientation[3:])
    placed = sorted(
        (float(np.dot(normal, np.asarray(h.ImagePositionPatient, dtype=float))), p)
        for p, h in members
    )
    return Series(
        uid,
        str(first.get("SeriesDescription", "")),
        str(first.get("Modality", "")),
        tuple(path for _, path in placed),
        tuple(position for position, _ in placed),
    )


def _check_spacing(path: Path, series: Series) -> None:
    """A DataError where two slices share a position or where slices are missing (a step more
    than GAP_FACTOR times the usual one), naming the slices around it."""
    steps = np.diff(series.positions)
    if len(steps) == 0:
        return
    usual = float(np.median(steps))
    for index, step in enumerate(steps):
        if step < 1e-3 or step > GAP_FACTOR * usual:
            what = "two slices at one position" if step < 1e-3 else "a gap (missing slices?)"
            raise DataError(
                f"{path}: series {series.uid} has {what} between {series.files[index].name} "
                f"and {series.files[index + 1].name}: {step:.2f} mm where the slices are "
                f"{usual:.2f} mm apart"
            )


def _decoded(path: Path, series: Series, max_voxels: int):
    import pydicom
    import SimpleITK as sitk

    _check_spacing(path, series)
    header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    voxels = int(header.Rows) * int(header.Columns) * len(series.files)
    if voxels > max_voxels:
        raise DataError(
            f"{path}: {header.Columns}x{header.Rows}x{len(series.files)} is {voxels:,} voxels, "
            f"over the limit of {max_voxels:,}"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(file) for file in series.files])
    try:
        return reader.Execute()
    except RuntimeError:
        raise DataError(f"{path}: series {series.uid} could not be decoded") from None


@contextmanager
def _unpacked(path: Path, max_bytes: int) -> Iterator[Path]:
    """The folder itself, or a zip's files unpacked flat into a temporary folder (names reduced
    to their last part; sizes checked before anything is written)."""
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DataError(f"{path}: not a readable zip") from None
    with archive, tempfile.TemporaryDirectory(prefix="bioseg-series-") as folder:
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        if len(members) > MAX_ZIP_FILES or total > max_bytes:
            raise DataError(
                f"{path}: {len(members)} files, {total / 1e6:,.0f} MB unpacked: over the limits "
                f"of {MAX_ZIP_FILES} files and {max_bytes / 1e6:,.0f} MB (from the voxel limit)"
            )
        for number, info in enumerate(members):
            target = Path(folder) / f"{number:05d}_{Path(info.filename).name[-80:]}"
            with archive.open(info) as source, target.open("wb") as sink:
                sink.write(source.read(info.file_size + 1)[: info.file_size])
        yield Path(folder)
