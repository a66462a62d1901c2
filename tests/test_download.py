"""trainers.data downloads from a local HTTP server, demo samples, and the command line."""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, SHARED_DATA
from trainers.data import DOWNLOADS, DataError, download, samples
from trainers.data.__main__ import main


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/cut.zip":
            return super().do_GET()
        self.send_response(200)  # promises 1000 bytes, sends 10, hangs up
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"PK" + bytes(8))
        self.close_connection = True
        return None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served on 127.0.0.1 for the test's duration, and its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_zip(path: Path, members: dict[str, bytes]) -> str:
    """Write a zip archive; returns its SHA-256."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_extracts(served: tuple[Path, str], tmp_path: Path) -> None:
    folder, base = served
    digest = write_zip(folder / "set.zip", {"set/images/a.png": b"A", "set/masks/a.png": b"M"})
    into = tmp_path / "data"
    root = download("toy", into, url=f"{base}/set.zip", sha256=digest)
    assert root == into / "toy"
    assert (root / "set/images/a.png").read_bytes() == b"A"
    assert [p.name for p in into.iterdir()] == ["toy"]  # no temporary files left
    with pytest.raises(FileExistsError, match="remove it"):
        download("toy", into, url=f"{base}/set.zip", sha256=digest)


def test_download_with_wrong_checksum_leaves_nothing(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    folder, base = served
    write_zip(folder / "set.zip", {"set/a.txt": b"A"})
    into = tmp_path / "data"
    with pytest.raises(DataError, match=r"SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        download("toy", into, url=f"{base}/set.zip", sha256="0" * 64)
    assert list(into.iterdir()) == []


def test_download_refuses_unsafe_members(served: tuple[Path, str], tmp_path: Path) -> None:
    folder, base = served
    write_zip(folder / "evil.zip", {"set/a.txt": b"A", "../evil": b"E"})
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as archive:
        link = tarfile.TarInfo("set/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    (folder / "link.tar.gz").write_bytes(tar_bytes.getvalue())
    into = tmp_path / "data"
    with pytest.raises(DataError, match=r"outside the folder: \['\.\./evil'\]"):
        download("evil", into, url=f"{base}/evil.zip")
    with pytest.raises(DataError, match="refusing links"):
        download("link", into, url=f"{base}/link.tar.gz")
    assert list(into.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_download_errors(served: tuple[Path, str], tmp_path: Path) -> None:
    _, base = served
    with pytest.raises(ValueError, match="known: kvasir"):
        download("nothing", tmp_path)
    with pytest.raises(ValueError, match="plain folder name"):
        download("../up", tmp_path, url=f"{base}/set.zip")
    with pytest.raises(OSError, match="404"):
        download("toy", tmp_path / "data", url=f"{base}/absent.zip")
    with pytest.raises(OSError, match="IncompleteRead"):  # a transfer cut short
        download("toy", tmp_path / "data", url=f"{base}/cut.zip")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    assert DOWNLOADS["kvasir"].urls == ("https://datasets.simula.no/downloads/kvasir-seg.zip",)


def test_samples_writes_png_pairs(tmp_path: Path) -> None:
    if not (SHARED_DATA / "DRIVE").is_dir():
        pytest.skip(f"shared data {SHARED_DATA / 'DRIVE'} is absent")
    written = samples(f"drive:{SHARED_DATA / 'DRIVE'}", 2, tmp_path)
    assert [p.name for p in written] == ["01.png", "01_mask.png", "02.png", "02_mask.png"]
    assert {p.parent for p in written} == {tmp_path / "drive"}
    image = np.asarray(Image.open(tmp_path / "drive" / "01.png"))
    source = np.asarray(Image.open(SHARED_DATA / "DRIVE/test/images/01_test.tif"))
    np.testing.assert_array_equal(image, source)
    mask = np.asarray(Image.open(tmp_path / "drive" / "01_mask.png"))
    assert set(np.unique(mask)) == {0, 255}
    truth = np.asarray(Image.open(SHARED_DATA / "DRIVE/test/1st_manual/01_manual1.gif"))
    np.testing.assert_array_equal(mask, truth)
    spec = f"drive:{SHARED_DATA / 'DRIVE'}"
    assert main(["download", spec, "--samples", "1", "--into", str(tmp_path / "cli")]) == 0
    assert sorted(p.name for p in (tmp_path / "cli" / "drive").iterdir()) == [
        "01.png",
        "01_mask.png",
    ]
    with pytest.raises(FileExistsError, match=r"01\.png already exists"):  # nothing overwritten
        samples(spec, 1, tmp_path / "cli")


def test_cli_info_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for n in range(3):
        for sub in ("images", "masks"):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / sub / f"{n}.png")
    assert main(["info", f"folder:{tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "classes: background, foreground" in out and "train: 3" in out
    assert main(["info", f"drive:{tmp_path / 'absent'}"]) == 2
    assert main(["download", "nothing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "absent" in err and "no download named 'nothing'" in err


def test_cli_entry_point_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainers.data", "info", f"retina:{tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown data set kind 'retina'")
    assert "Traceback" not in result.stderr
