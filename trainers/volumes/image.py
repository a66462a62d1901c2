"""Volumes read and written as the 3D images they are, through SimpleITK (the reader nnU-Net uses
by default): NIfTI (3D, and 4D with channels last as the Decathlon stores modalities), NRRD,
MHA/MHD, and DICOM series (`trainers.volumes.dicom_series`).

    volume = read_volume("case.nii.gz")     # C x D x H x W, canonical (LPS) axes, spacing in mm
    write_labels(labels, volume, "case_seg.nii.gz")   # back in the input's own grid and geometry

Every volume is brought to one canonical orientation, the one whose direction is the identity in
ITK's LPS world (index axes W, H, D pointing to the patient's left, posterior and superior), so
a model sees a NIfTI stored RAS and a DICOM series stored LPS the same way round; what is written
for a volume is turned back to its file's orientation and given its file's origin, spacing and
direction, so a label volume opened beside its image in a viewer lies on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers.data.errors import DataError
from trainers.data.readers import VOLUME_SUFFIXES

CANONICAL = "LPS"  # SimpleITK's orientation code of the identity direction
MAX_VOXELS = 512 * 512 * 1024  # a command line's default limit, checked before decoding


@dataclass(frozen=True)
class Geometry:
    """Where a file's voxels lie, as ITK gives it (LPS world, x-y-z order): the size, origin,
    spacing and the direction cosines (row-major 3 x 3)."""

    size: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> Geometry:  # a SimpleITK image
        return cls(
            tuple(image.GetSize()[:3]),
            tuple(image.GetOrigin()[:3]),
            tuple(image.GetSpacing()[:3]),
            _direction_3d(image),
        )

    def orientation(self) -> str:
        import SimpleITK as sitk

        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.direction)

    def differences(self, other: Geometry, tolerance_mm: float = 1e-3) -> list[str]:
        """What differs beyond rounding (spacing and origin to `tolerance_mm`, direction to 1e-4),
        as phrases naming both values; empty when the two grids are one."""
        found = []
        if self.size != other.size:
            found.append(f"size {self.size} against {other.size}")
        for name, tolerance in (("spacing", tolerance_mm), ("origin", tolerance_mm)):
            mine, theirs = getattr(self, name), getattr(other, name)
            if not np.allclose(mine, theirs, rtol=0, atol=tolerance):
                found.append(f"{name} {_rounded(mine)} against {_rounded(theirs)}")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=1e-4):
            found.append(
                f"direction {_rounded(self.direction)} against {_rounded(other.direction)}"
            )
        return found


@dataclass(frozen=True)
class Volume:
    """A volume in canonical orientation: `array` C x D x H x W (float32; labels D x H x W as
    read), `spacing` (D, H, W) in mm, the file's own `geometry` to write back in, the imaging
    `modality` ("CT", "MR", ... or "" when unknown) and a `name` for messages and outputs (the
    file's or the series folder's, never a patient's)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    geometry: Geometry
    modality: str = ""
    name: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[-3:])

    def voxel_ml(self) -> float:
        """The volume of one voxel in millilitres (mm³ / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0


def is_volume_file(path: str | Path) -> bool:
    """A file whose name says it holds a volume (NIfTI, NRRD, MHA/MHD)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def volume_stem(path: str | Path) -> str:
    """The name without its volume (or zip) suffix: `case_0000.nii.gz` -> `case_0000`."""
    name = Path(path).name
    for suffix in (*sorted(VOLUME_SUFFIXES, key=len, reverse=True), ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_volume(
    path: str | Path, *, series: str | None = None, max_voxels: int = MAX_VOXELS
) -> Volume:
    """The image volume in a file or a DICOM series (a folder or a zip: `series` picks one
    by its SeriesInstanceUID, or the start of one, where the folder holds several), canonical,
    float32 C x D x H x W. Its size is checked against `max_voxels` from the header, before the
    voxels are decoded. A DataError names the file and the problem."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".zip":
        from trainers.volumes.dicom_series import read_series

        image, modality = read_series(path, series=series, max_voxels=max_voxels)
    else:
        image, modality = _read_file(path, max_voxels), ""
    return _canonical(image, path, modality, label=False)


def read_label_volume(path: str | Path, like: Volume, *, max_voxels: int = MAX_VOXELS) -> Volume:
    """The label volume in `path` for the image `like`: D x H x W integer classes (uint8 or
    int16), canonical. Refused, naming both, when its shape or geometry differs from the
    image's, or when it holds values that are not whole numbers (float files of 0.0, 1.0 ...
    are fine)."""
    path = Path(path)
    labels = _canonical(_read_file(path, max_voxels), path, like.modality, label=True)
    if labels.array.shape[0] != 1:
        raise DataError(
            f"{path}: a label volume must have one channel, found {labels.array.shape[0]}"
        )
    if differences := labels.geometry.differences(like.geometry, _tolerance(like)):
        raise DataError(
            f"{path}: the label volume does not lie on its image {like.name}: "
            + "; ".join(differences)
        )
    values = labels.array[0]
    if values.dtype.kind == "f":
        whole = np.round(values)
        if not np.array_equal(whole, values):
            bad = np.unique(values[whole != values])[:5]
            raise DataError(
                f"{path}: label values must be whole numbers (classes), found {bad.tolist()}"
            )
        values = whole
    if values.min() < 0 or values.max() > np.iinfo(np.int16).max:
        raise DataError(f"{path}: label values must be classes 0 and up, found {values.min()}")
    dtype = np.uint8 if values.max() < 256 else np.int16
    return Volume(values.astype(dtype), labels.spacing, labels.geometry, like.modality, like.name)


def write_labels(labels: np.ndarray, like: Volume, path: str | Path) -> Path:
    """Write canonical D x H x W `labels` for the volume `like` to `path` (`.nii.gz`, `.nrrd`,
    `.mha`), in `like`'s file's own orientation, origin, spacing and direction. No header of
    the input (a DICOM series' patient data) is copied."""
    import SimpleITK as sitk

    if labels.shape != like.shape:
        raise ValueError(f"labels of shape {labels.shape} for a volume of shape {like.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8)))
    canonical = _canonical_geometry(like.geometry)
    image.SetSpacing(canonical.spacing)
    image.SetOrigin(canonical.origin)
    image.SetDirection(canonical.direction)
    image = sitk.DICOMOrient(image, like.geometry.orientation())
    image.SetOrigin(like.geometry.origin)  # the file's own values, not recomputed ones
    image.SetSpacing(like.geometry.spacing)
    image.SetDirection(like.geometry.direction)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def _tolerance(like: Volume) -> float:
    """Grids agree to 1 % of the finest voxel side (and at least a thousandth of a mm)."""
    return max(min(like.spacing) * 0.01, 1e-3)


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(float(value), 3) for value in values]


def _direction_3d(image) -> tuple[float, ...]:
    direction = np.asarray(image.GetDirection(), dtype=float)
    size = round(len(direction) ** 0.5)
    return tuple(float(value) for value in direction.reshape(size, size)[:3, :3].ravel())


def _read_file(path: Path, max_voxels: int):
    """The SimpleITK image in a volume file, its size checked from the header first."""
    import SimpleITK as sitk

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not is_volume_file(path):
        raise DataError(
            f"{path}: not a volume file (expected {', '.join(VOLUME_SUFFIXES)}, or a DICOM "
            "series folder or zip)"
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        _check_voxels(path, size, reader.GetNumberOfComponents(), max_voxels)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_length(path, reader)
        return reader.Execute()
    except RuntimeError as error:  # ITK's: broken header, data shorter than the header says
        reason = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
        raise DataError(
            f"{path}: not a readable volume ({reason or 'ITK could not read it'})"
        ) from None


def _check_voxels(path: Path, size: tuple[int, ...], components: int, max_voxels: int) -> None:
    if len(size) not in (3, 4):
        raise DataError(
            f"{path}: a {len(size)}D image ({'x'.join(map(str, size))}); a volume has 3 axes "
            "(or 4, channels last)"
        )
    voxels = int(np.prod(size, dtype=np.int64)) * max(components, 1)
    if voxels > max_voxels:
        raise DataError(
            f"{path}: {'x'.join(map(str, size))} is {voxels:,} voxels, over the limit of "
            f"{max_voxels:,}"
        )


def _check_nifti_length(path: Path, reader) -> None:
    """A DataError when a NIfTI file holds fewer bytes than its header's shape and type need
    (ITK reads a truncated file without a word, padding it with whatever it finds)."""
    import gzip
    import struct
    import zlib

    import SimpleITK as sitk

    probe = sitk.Image([1, 1, 1], reader.GetPixelID(), max(reader.GetNumberOfComponents(), 1))
    voxel_bytes = sitk.GetArrayFromImage(probe).nbytes
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        try:
            header = stream.read(540)
            order = "<" if struct.unpack("<i", header[:4])[0] in (348, 540) else ">"
            nifti2 = struct.unpack(f"{order}i", header[:4])[0] == 540
            offset = (
                struct.unpack(f"{order}q", header[168:176])[0]
                if nifti2
                else int(struct.unpack(f"{order}f", header[108:112])[0])
            )
            needed = offset + int(np.prod(reader.GetSize(), dtype=np.int64)) * voxel_bytes
            stream.seek(0)
            found = 0
            while found < needed and (chunk := stream.read(min(1 << 24, needed - found))):
                found += len(chunk)
        except (EOFError, zlib.error, OSError, struct.error):
            found, needed = -1, 0
    if found < needed:
        shape = "x".join(map(str, reader.GetSize()))
        raise DataError(
            f"{path}: not a readable volume (its data ends before the {shape} voxels its header "
            "declares: a truncated or damaged file)"
        )


def _canonical_geometry(geometry: Geometry) -> Geometry:
    """The geometry a file's grid has once turned to the canonical orientation."""
    import SimpleITK as sitk

    probe = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    probe.SetOrigin(geometry.origin)
    probe.SetSpacing(geometry.spacing)
    probe.SetDirection(geometry.direction)
    return Geometry.of(sitk.DICOMOrient(probe, CANONICAL))


def _canonical(image, path: Path, modality: str, *, label: bool) -> Volume:
    """A SimpleITK image (3D; 4D channels last; or vector pixels) as a canonical Volume."""
    import SimpleITK as sitk

    channels = [image]
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        channels = [
            sitk.Extract(image, [*size[:3], 0], [0, 0, 0, index]) for index in range(size[3])
        ]
    elif image.GetNumberOfComponentsPerPixel() > 1:
        channels = [
            sitk.VectorIndexSelectionCast(image, index)
            for index in range(image.GetNumberOfComponentsPerPixel())
        ]
    if image.GetDimension() not in (3, 4):
        raise DataError(f"{path}: a {image.GetDimension()}D image, not a volume")
    geometry = Geometry.of(channels[0])
    oriented = [sitk.DICOMOrient(channel, CANONICAL) for channel in channels]
    arrays = [sitk.GetArrayFromImage(channel) for channel in oriented]
    array = np.stack(arrays) if label else np.stack(arrays).astype(np.float32, copy=False)
    if not label and not np.isfinite(array).all():
        raise DataError(f"{path}: the volume holds NaN or infinite values")
    spacing = tuple(float(side) for side in reversed(oriented[0].GetSpacing()))
    name = path.name if path.is_dir() else volume_stem(path)
    return Volume(array, spacing, geometry, modality, name)
