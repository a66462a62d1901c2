"""The error every reader raises, and the pixel-count check they all make before decoding."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MAX_PIXELS_ENV", "DataError", "check_pixel_count"]

MAX_PIXELS_ENV = "BIOSEG_MAX_PIXELS"


class DataError(ValueError):
    """A data file or data set that cannot be used as given; the message names the file."""


def check_pixel_count(path: str | Path, size: tuple[int, int], limit: int) -> None:
    """A `DataError` naming `path` when an image of `size` (width, height, as its header
    says) has more than `limit` pixels: checked before decoding."""
    width, height = size
    if width * height > limit:
        raise DataError(
            f"{path}: {width} x {height} = {width * height:,} pixels exceeds the limit "
            f"of {limit:,}; raise it with {MAX_PIXELS_ENV} if the file is trusted"
        )
