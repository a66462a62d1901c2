"""DICOM and TIFF through the field's own readers: pydicom and tifffile.

    decoded = read_decoded("scan.dcm", index=0)   # pixels, physical pixel size, frames, note

A DICOM file's stored values go through its rescale slope and intercept; a grey one is shown
through its own window (centre and width), or its full range when it has none; colour (YBR
included) becomes RGB. A TIFF page, or an OME-TIFF plane, is read at its full depth (16-bit
colour too). Both report the physical size of a pixel when the file states it: DICOM's
PixelSpacing (or ImagerPixelSpacing) in millimetres, OME's PhysicalSizeX/Y or the resolution
tags in micrometres. Messages name the file and the problem, never a patient's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, check_pixel_count

__all__ = ["Decoded", "is_dicom", "is_tiff", "read_dicom", "read_tiff"]


@dataclass(frozen=True)
class Decoded:
    """One 2-D image of a file: float32 H x W x C in [0, 1] (C = 1 or 3), and what the file
    says about it."""

    pixels: np.ndarray
    spacing: tuple[float, float] | None = None  # (row, column) size of a pixel, in `unit`
    unit: str = ""  # "mm" or "µm"
    frames: int = 1  # frames, pages or planes in the file; `index` chose one
    index: int = 0
    note: str = ""  # how the values were shown, e.g. "window centre 40, width 400 (the file's)"


def is_dicom(path: Path) -> bool:
    """A DICOM file: its suffix, or the "DICM" marker after the 128-byte preamble."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as file:
        return file.read(132)[128:] == b"DICM"


def is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _index(path: Path, index: int, count: int, what: str) -> int:
    if not 0 <= index < count:
        raise DataError(
            f"{path}: {what} {index} is out of range; the file has {count} (0 to {count - 1})"
        )
    return index


def _spacing(path: Path, values: object, what: str) -> tuple[float, float]:
    spacing = tuple(float(v) for v in values)  # type: ignore[union-attr]
    if len(spacing) != 2 or min(spacing) <= 0 or not all(np.isfinite(spacing)):
        raise DataError(f"{path}: {what} {list(spacing)} is not two positive sizes")
    return spacing  # type: ignore[return-value]


def read_dicom(path: Path, *, index: int = 0, max_pixels: int) -> Decoded:
    """Frame `index` of a DICOM file."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, pixel_array

    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable DICOM file ({type(error).__name__})") from None
    if "PixelData" not in ds:
        kind = ds.get("Modality", "")
        raise DataError(
            f"{path}: a DICOM file without pixel data ({kind or 'no image'}: a structured "
            "report or other non-image object?)"
        )
    bits = int(ds.get("BitsAllocated", 0))
    if bits > 16:
        raise DataError(f"{path}: {bits}-bit DICOM pixel data is not supported (at most 16)")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    check_pixel_count(path, (columns, rows), max_pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    index = _index(path, index, frames, "frame")
    syntax = ds.file_meta.get("TransferSyntaxUID", "")
    try:
        stored = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as error:  # a missing handler, a truncated or corrupt stream
        name = getattr(syntax, "name", str(syntax))
        reason = " ".join(str(error).split())[:400]  # pydicom names the missing packages
        raise DataError(f"{path}: cannot decode its pixel data ({name}): {reason}") from None
    colour = int(ds.get("SamplesPerPixel", 1)) == 3
    if colour:  # RGB (YBR converted by pydicom), scaled by the bits stored
        top = 2 ** int(ds.get("BitsStored", bits)) - 1
        pixels, note = stored.astype(np.float32) / top, "colour"
    else:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        pixels, note = _windowed(ds, values)
        pixels = pixels[..., None]
    spacing_tag = "PixelSpacing" if "PixelSpacing" in ds else "ImagerPixelSpacing"
    spacing = _spacing(path, ds[spacing_tag].value, spacing_tag) if spacing_tag in ds else None
    return Decoded(pixels, spacing, "mm" if spacing else "", frames, index, note)


def _windowed(ds, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Grey values in [0, 1] through the file's window, or its full range; and which."""
    from pydicom.multival import MultiValue

    def first(value: object) -> float | None:  # a window may list several: the first is the
        if value is None:  # default one
            return None
        return float(value[0] if isinstance(value, MultiValue) else value)  # type: ignore[index]

    centre, width = first(ds.get("WindowCenter")), first(ds.get("WindowWidth"))
    if centre is not None and width is not None and width > 0:
        low, high = centre - width / 2, centre + width / 2
        note = f"window centre {centre:g}, width {width:g} (the file's)"
    else:
        low, high = float(values.min()), float(values.max())
        note = f"full range {low:g} to {high:g} (the file has no window)"
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.clip(scaled, 0, 1).astype(np.float32), note


_OME_SIZE = re.compile(r'PhysicalSize([XY])="([^"]+)"(?:\s+PhysicalSize\1Unit="([^"]+)")?')
_MICROMETRES = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def read_tiff(path: Path, *, index: int = 0, max_pixels: int) -> Decoded | None:
    """Page `index` of a TIFF, or plane `index` of an OME-TIFF's first series (its non-spatial
    axes, such as Z, C or T, flattened in order); None for a grey or RGB TIFF of another kind
    (palette, CMYK, 1-bit, float samples), which Pillow reads."""
    import tifffile

    _PLAIN = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            stack = {a: n for a, n in zip(axes, shape, strict=True) if a not in "YXS"}
            plane = dict(zip(axes, shape, strict=True))
            check_pixel_count(path, (plane["X"], plane["Y"]), max_pixels)
            planes = int(np.prod(list(stack.values()), dtype=np.int64))
            index = _index(path, index, planes, "plane" if tif.is_ome else "page")
            first = series.pages[0]
            if first.photometric not in _PLAIN or first.dtype not in (np.uint8, np.uint16):
                return None  # palette, CMYK, 1-bit, float...: Pillow's conversions apply
            if planes == len(series.pages):  # one page per plane: read that page alone
                values = series.pages[index].asarray()
            else:
                values = series.asarray()[np.unravel_index(index, list(stack.values()))]
            if "S" in axes and axes.index("S") < axes.index("Y"):  # planar RGB: samples last
                values = np.moveaxis(values, 0, -1)
            spacing, unit = _tiff_spacing(path, tif)
    except DataError:
        raise
    except Exception as error:  # a crafted or truncated file: tifffile's own exception types
        raise DataError(f"{path}: not a readable TIFF ({type(error).__name__}: {error})") from None
    pixels = _unit_range(path, values)
    note = f"plane {index} of {planes} ({''.join(stack)} stack)" if planes > 1 else ""
    return Decoded(pixels, spacing, unit, planes, index, note)


def _unit_range(path: Path, values: np.ndarray) -> np.ndarray:
    """8 or 16-bit unsigned integers as float32 in [0, 1], H x W x C (C = 1 or 3)."""
    if values.dtype == np.uint8:
        pixels = values.astype(np.float32) / 255.0
    elif values.dtype == np.uint16:
        pixels = values.astype(np.float32) / 65535.0
    else:
        raise DataError(
            f"{path}: {values.dtype} TIFF samples are not supported; save it as 8 or 16 bit"
        )
    if pixels.ndim == 2:
        return pixels[..., None]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return np.ascontiguousarray(pixels[..., :3])  # alpha dropped
    raise DataError(f"{path}: a TIFF plane of shape {values.shape} is not a grey or RGB image")


def _tiff_spacing(path: Path, tif) -> tuple[tuple[float, float] | None, str]:
    """The pixel size in micrometres, from OME metadata or the resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        sizes = {axis: (value, unit) for axis, value, unit in _OME_SIZE.findall(tif.ome_metadata)}
        if set(sizes) == {"X", "Y"}:
            scaled = [
                float(v) * _MICROMETRES.get(u or "µm", 1.0) for v, u in (sizes["Y"], sizes["X"])
            ]
            return _spacing(path, scaled, "OME PhysicalSizeY/X"), "µm"
    tags = tif.pages[0].tags
    unit = tags.get("ResolutionUnit")
    per_unit = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value) if unit else 1)  # inch, cm
    if per_unit and "XResolution" in tags and "YResolution" in tags:
        (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
        if xn and yn:
            return _spacing(path, [per_unit * yd / yn, per_unit * xd / xn], "resolution"), "µm"
    return None, ""
