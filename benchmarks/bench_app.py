"""The web demo's speed: start-up, first answer, request overhead, and a 4096x4096 tiled image.

    python benchmarks/bench_app.py

Starts `python app.py` on a free localhost port and measures, in the same run:
- start-up: from the process start until the port answers; first answer: the first request;
- one 512x512 request through gradio_client for the default model, beside a plain forward pass
  of the same model in this process (the ratio is the app's overhead);
- one 4096x4096 image (tiled inference) through gradio_client, with the server's peak memory.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_zoo import paired_medians  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from gradio_client import Client, handle_file

    import app as demo_app

    label = next(iter(demo_app.CHOICES))
    model = demo_app.load_model(demo_app.CHOICES[label])
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    small, large = folder / "512.png", folder / "4096.tif"
    Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(small)
    Image.fromarray(rng.integers(0, 255, (4096, 4096), dtype=np.uint8)).save(large)

    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not up yet
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit("app.py did not start") from None
                time.sleep(0.25)
        startup = time.perf_counter() - started

        def request(path: Path, as_file: bool = False) -> object:
            image, file = (
                (None, handle_file(str(path))) if as_file else (handle_file(str(path)), None)
            )
            return client.predict(label, image, file, None, 0.5, api_name="/segment")

        first = time.perf_counter()
        request(small)
        first_answer = time.perf_counter() - first
        image = np.asarray(Image.open(small), dtype=np.float32) / 255
        x = demo_app.model_input(image, model)
        via_app, plain = paired_medians([lambda: request(small), lambda: model.predict(x)], 5)
        tiled_start = time.perf_counter()
        request(large, as_file=True)
        tiled = time.perf_counter() - tiled_start
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"model: {label}\n")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| start-up, process start to port answering | {startup:.1f} s |")
    print(f"| first answer, 512x512 (model already loaded at start) | {first_answer:.2f} s |")
    print(f"| one 512x512 request through gradio_client (median of 5) | {via_app * 1e3:.0f} ms |")
    print(f"| plain forward of the same model (median of 5) | {plain * 1e3:.0f} ms |")
    print(f"| overhead ratio, request / forward | {via_app / plain:.2f} |")
    print(f"| 4096x4096 TIFF, tiled, through gradio_client | {tiled:.1f} s |")
    print(f"| server peak memory (VmHWM) after it | {peak:.0f} MB |")


if __name__ == "__main__":
    main()
