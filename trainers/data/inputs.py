"""The inputs of a batch prediction: a folder (recursive), a glob pattern, or a text file listing
paths, each with the relative path its outputs keep under the output folder.

    for found in list_inputs("study/"):   # Input(path=study/a/1.png, relative=a/1.png)
        ...
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from zoo._checks import listing as names

from .readers import DataError

__all__ = ["INPUT_SUFFIXES", "Input", "check_output_outside", "list_inputs"]

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom")


@dataclass(frozen=True)
class Input:
    """An image to predict, and its path relative to the inputs' root (kept under the output)."""

    path: Path
    relative: Path


def list_inputs(source: str | Path) -> list[Input]:
    """The images of `source`, sorted: a folder's image files at any depth (by suffix,
    `INPUT_SUFFIXES`), the files a glob pattern matches, or the paths a text file lists (one a
    line, relative to the file; blank lines and # comments skipped). A relative glob is taken
    from the current folder. Relative paths are taken from the folder, or from the files'
    common parent."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in INPUT_SUFFIXES)
        root = path
    elif path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
        files = _listed(path)
        root = _common_parent(files)
    elif glob.has_magic(text):
        matches = glob.glob(text, recursive=True)
        files = sorted(Path(os.path.abspath(p)) for p in matches if Path(p).is_file())
        root = _common_parent(files)
    elif path.is_file():
        files, root = [path], path.parent
    else:
        raise DataError(f"{source}: no such folder, file or glob pattern")
    if not files:
        raise DataError(f"{source}: no image files ({', '.join(INPUT_SUFFIXES)})")
    return [Input(p, p.relative_to(root)) for p in files]


def _listed(listing: Path) -> list[Path]:
    lines = listing.read_text(encoding="utf-8").splitlines()
    paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    files = [(listing.parent / p).resolve() for p in paths]
    if missing := [str(p) for p in files if not p.is_file()]:
        raise DataError(f"{listing}: listed files that do not exist: {names(missing)}")
    return sorted(set(files))


def _common_parent(files: list[Path]) -> Path:
    if not files:
        return Path(".")
    parents = [os.path.abspath(p.parent) for p in files]  # as the files are named, links kept
    return Path(os.path.commonpath(parents))


def check_output_outside(output: Path, inputs: list[Input]) -> None:
    """A DataError if `output` lies inside the inputs' root folder: nothing under it is
    written."""
    out = output.expanduser().resolve()
    roots = {i.path.resolve().parents[len(i.relative.parts) - 1] for i in inputs}
    for root in sorted(roots):
        if out == root or root in out.parents:
            raise DataError(
                f"--output {output} lies inside the inputs' folder {root}: choose a folder "
                "outside it (nothing under the inputs is ever written)"
            )
