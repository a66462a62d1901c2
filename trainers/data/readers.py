"""Read images and masks from files into numpy arrays, with errors that name the file.

Images become float32 H x W x C arrays in [0, 1] (C = 1 or 3); masks become H x W arrays, bool
for binary masks and int64 for label maps. The pixel count is checked from the file header before
any decoding, so a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from zoo._checks import listing

from .errors import MAX_PIXELS_ENV, DataError, check_pixel_count
from .medical import Decoded, is_dicom, is_tiff, read_dicom, read_tiff

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "DataError",
    "MaskMode",
    "Palette",
    "check_pixel_count",
    "decoding",
    "read_decoded",
    "read_image",
    "read_mask",
    "read_masks_union",
    "read_objects",
    "set_pixel_limit",
]

DEFAULT_MAX_PIXELS = 20_000 * 20_000
MaskMode = Literal["binary", "labels", "objects"]
Palette = dict[tuple[int, int, int], int]

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": 32-bit, values 0..65535
_PROCESS_LIMIT: int | None = None  # set_pixel_limit's, where a server set one


VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Files that hold volumes (`trainers.volumes`), never read as 2D images."""


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as float32 H x W x C in [0, 1], C = 1 (grey) or 3 (colour).

    DICOM and TIFF go through pydicom and tifffile (`read_decoded`: the first frame, page or
    plane); other formats through Pillow: 8-bit images are divided by 255 and 16-bit grey ones
    by 65535. Alpha is dropped; palette, CMYK and other colour modes are converted to RGB.
    ``max_pixels`` defaults to ``$BIOSEG_MAX_PIXELS`` or 20,000 x 20,000.
    """
    return read_decoded(path, max_pixels=max_pixels).pixels


def read_decoded(path: str | Path, *, index: int = 0, max_pixels: int | None = None) -> Decoded:
    """Frame, page or plane `index` of an image file, with the physical size of a pixel and
    the number of frames when the file states them (DICOM, TIFF, OME-TIFF)."""
    path, limit = _checked_file(path), _max_pixels(max_pixels)
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        raise DataError(
            f"{path}: a volume (NIfTI, NRRD, MHA), not a 2D image: open it as a volume (the "
            "demo's Volumes tab; a volume model for trainers.predict)"
        )
    with decoding(path):
        if is_dicom(path):
            return read_dicom(path, index=index, max_pixels=limit)
        decoded = read_tiff(path, index=index, max_pixels=limit) if is_tiff(path) else None
        if decoded is not None:
            return decoded
        if index != 0:
            raise DataError(f"{path}: frame {index} is out of range; the file has 1 (0)")
        image = _open(path, limit)
        if image.mode in _SIXTEEN_BIT_MODES:
            pixels = _sixteen_bit(path, image).astype(np.float32) / 65535.0
        else:
            pixels = np.asarray(_eight_bit(image), dtype=np.float32) / 255.0
    return Decoded(pixels[..., None] if pixels.ndim == 2 else pixels)


def read_mask(
    path: str | Path,
    *,
    mode: MaskMode = "binary",
    palette: Palette | None = None,
    threshold: int = 128,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read a mask as an H x W array: bool for ``mode="binary"``, int64 for ``"labels"``.

    Binary: colour masks are converted to grey; a mask whose maximum is 1 is read as 0/1,
    any other as ``value >= threshold`` (so JPEG-compressed 0/255 masks come out clean).
    Labels: integer class maps are read as they are (palette images give their indices); with
    ``palette`` every pixel's RGB colour is mapped to its class, and a colour missing from the
    palette is an error.
    """
    if mode not in ("binary", "labels"):
        raise ValueError(f"mask mode must be 'binary' or 'labels', got {mode!r}")
    if palette is not None and mode != "labels":
        raise ValueError("a palette maps colours to class ids: use it with mode='labels'")
    path, limit = _checked_file(path), _max_pixels(max_pixels)
    with decoding(path):
        return _mask_values(path, _open(path, limit), mode, palette, threshold)


def _mask_values(
    path: Path, image: Image.Image, mode: MaskMode, palette: Palette | None, threshold: int
) -> np.ndarray:
    if palette is not None:
        return _map_palette(path, np.asarray(image.convert("RGB")), palette)
    if image.mode in _SIXTEEN_BIT_MODES:
        values = _sixteen_bit(path, image)
    elif mode == "labels" and image.mode in ("L", "P", "1"):
        values = np.asarray(image)
    elif mode == "labels":
        raise DataError(
            f"{path}: a {image.mode} label mask needs a palette mapping colours to classes"
        )
    elif image.mode == "P" and np.asarray(image).max(initial=0) <= 1:
        values = np.asarray(image)  # indices 0/1, as a label mask reads them, whatever colours
    else:
        values = np.asarray(image.convert("L"))
    if mode == "labels":
        return values.astype(np.int64)
    if image.mode in _SIXTEEN_BIT_MODES:
        return values > 0  # 0/65535, 0/1, or a label image's objects
    if image.format != "JPEG":  # lossless: a binary mask holds two levels, nothing in between
        _check_binary_levels(path, values)
    return values == 1 if values.max(initial=0) == 1 else values >= threshold


def _check_binary_levels(path: Path, values: np.ndarray) -> None:
    if values.dtype == np.uint8:
        levels = set(np.flatnonzero(np.bincount(values.ravel(), minlength=256)).tolist())
    else:
        levels = set(np.unique(values).tolist())
    if not any(levels <= {0, top} for top in (1, 255, 65535)):
        raise DataError(
            f"{path}: a binary mask holds 0/255 or 0/1, this one has the values "
            f"{listing(sorted(levels))}; a class map is read with "
            "mode='labels' (JPEG masks are thresholded instead)"
        )


def read_masks_union(paths: Sequence[str | Path], *, threshold: int = 128) -> np.ndarray:
    """Union of binary masks of one image (e.g. one mask per nucleus), as a bool H x W array."""
    if not paths:
        raise DataError("no mask files to merge")
    union = read_mask(paths[0], threshold=threshold)
    for path in paths[1:]:
        mask = read_mask(path, threshold=threshold)
        if mask.shape != union.shape:
            raise DataError(
                f"{path}: mask is {size_text(mask)} but {paths[0]} is {size_text(union)}; "
                "all masks of one image must have the same size"
            )
        union |= mask
    return union


def read_objects(paths: Sequence[str | Path]) -> np.ndarray:
    """One image's objects as a label image (int32 H x W, 0 background): one binary mask file
    per object (DSB 2018), numbered 1, 2, ... in file order (a later mask wins where two
    overlap), or one label image, one integer id per object (16- or 32-bit PNG or TIFF, or
    8-bit grey with at most 255 objects)."""
    if not paths:
        raise DataError("no mask files to read objects from")
    if len(paths) > 1:
        labels = np.zeros(read_mask(paths[0]).shape, np.int32)
        for number, path in enumerate(paths, start=1):
            mask = read_mask(path)
            if mask.shape != labels.shape:
                raise DataError(
                    f"{path}: mask is {size_text(mask)} but {paths[0]} is {size_text(labels)}; "
                    "all masks of one image must have the same size"
                )
            labels[mask] = number
        return labels
    path = _checked_file(paths[0])
    with decoding(path):
        image = _open(path, _max_pixels(None))
        if image.mode in _SIXTEEN_BIT_MODES:
            return _sixteen_bit(path, image).astype(np.int32)
        if image.mode in ("L", "P", "1"):
            return np.asarray(image).astype(np.int32)
    raise DataError(
        f"{path}: a label image holds one integer id per object (0 background), this one "
        f"holds {image.mode} colour values; save it as a 16-bit grey PNG or TIFF"
    )


def set_pixel_limit(limit: int) -> None:
    """The process's one pixel limit, set once at its start (a web server's): the default of
    every reader, and Pillow's own decompression-bomb check, which is never lifted per call."""
    global _PROCESS_LIMIT
    _PROCESS_LIMIT = Image.MAX_IMAGE_PIXELS = _positive(limit)


def _positive(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"a pixel limit is a positive whole number of pixels, got {limit!r}")
    return limit


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return max_pixels
    if _PROCESS_LIMIT is not None:
        return _PROCESS_LIMIT
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} must be an integer pixel count") from None


def _startup_limit() -> int:
    """Pillow's check at import: the limit the environment sets (Pillow's own 89M pixels is
    below ours), so that no call has to lift it."""
    try:
        return max(_max_pixels(None), 1)
    except ValueError:
        return DEFAULT_MAX_PIXELS


def _checked_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    return path


@contextmanager
def decoding(path: str | Path) -> Iterator[None]:
    """Turn whatever a decoder raises on an untrusted file into a DataError naming the file.

    A crafted file can make Pillow (or any decoder added later) fail with any exception type
    from deep inside a plugin (a TypeError from a TIFF tag stored as text, an IndexError, ...),
    so nothing is listed: our own argument checks run before this block, and what escapes it is
    the file's doing. The decoder's message and exception type are kept in the message.
    """
    try:
        yield
    except DataError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own limit, when it is the smaller
        raise DataError(
            f"{path}: the image exceeds the limit of {Image.MAX_IMAGE_PIXELS:,} pixels ({error})"
        ) from error
    except Exception as error:
        raise DataError(
            f"{path}: not a readable image ({type(error).__name__}: {error})"
        ) from error


def _open(path: Path, limit: int) -> Image.Image:
    """Open, check the pixel count from the header, decode (first frame), and turn it upright
    by its EXIF orientation, as image viewers and annotation tools show it."""
    with Image.open(path) as image:
        check_pixel_count(path, image.size, limit)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # as viewers show it (camera JPEGs)
    if image.mode == "F":
        raise DataError(f"{path}: 32-bit float images are not supported; save it as 8 or 16 bit")
    return image


def _eight_bit(image: Image.Image) -> Image.Image:
    """Grey images stay grey (L); every other mode becomes RGB, alpha dropped."""
    if image.mode in ("1", "L", "LA"):
        return image.convert("L")
    if image.mode in ("P", "PA") and ("transparency" in image.info or image.mode == "PA"):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _sixteen_bit(path: Path, image: Image.Image) -> np.ndarray:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataError(
            f"{path}: {image.mode} values span {values.min()}..{values.max()}, "
            "outside the 16-bit range 0..65535"
        )
    return values


def _map_palette(path: Path, rgb: np.ndarray, palette: Palette) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, inverse = np.unique(codes, return_inverse=True)
    lookup = {(r << 16) | (g << 8) | b: label for (r, g, b), label in palette.items()}
    unexpected = [int(c) for c in colours if int(c) not in lookup]
    if unexpected:
        listed = listing([(c >> 16, (c >> 8) & 255, c & 255) for c in unexpected])
        raise DataError(
            f"{path}: {len(unexpected)} colour(s) not in the palette: {listed}; "
            f"palette colours are {sorted(palette)}"
        )
    labels = np.array([lookup[int(c)] for c in colours], dtype=np.int64)
    return labels[inverse.reshape(codes.shape)]


def size_text(array: np.ndarray) -> str:
    """An image's width x height, for messages."""
    return f"{array.shape[1]} x {array.shape[0]}"


Image.MAX_IMAGE_PIXELS = _startup_limit()
