"""Segment requests from another visitor while a fine-tune runs: every answer, and the latency
percentiles beside those of the same requests with nothing else running, in the same run.

    python benchmarks/bench_finetune_load.py --data ../shared/data/DSB2018-nuclei

Starts `python app.py` on a free port; a client sends `/segment` requests on the histology
example one after the other, first alone for `--seconds`, then while another visitor, in
headless Chromium, fine-tunes `dsb2018-unet` in the Teach tab on 3 DSB 2018 brightfield pairs
(uploaded as a zip) for the server's 90 s: the fine-tune runs inside the server process, as on
a Space, and shares its cores with the Segment requests.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_finetune import brightfield, write_pairs
from trainers.data import parse_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dsb2018" / "histology-a08166d9.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]  # fmt: skip


def segment(client) -> float:
    """Seconds one `/segment` request on the histology example takes to answer."""
    from gradio_client import handle_file

    start = time.perf_counter()
    client.predict("dsb2018-unet (bundled)", handle_file(str(EXAMPLE)), None, None, 0.5,
                   api_name="/segment")  # fmt: skip
    return time.perf_counter() - start


def latencies(client, seconds: float, until: threading.Event | None = None) -> list[float]:
    """The latencies of requests one after the other for `seconds`, or until `until` is set."""
    found, end = [], time.monotonic() + seconds
    while time.monotonic() < end and not (until and until.is_set()):
        found.append(segment(client))
    return found


def zipped(folder: Path) -> Path:
    """The pairs' folder (images/, masks/) as the zip a visitor uploads."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.png")):
            bundle.write(path, path.relative_to(folder))
    return archive


def fine_tune_in_the_page(url: str, archive: Path, client) -> list[float]:
    """Upload `archive` in the Teach tab and fine-tune on it; the latencies of the client's
    Segment requests from the click until the page says the model is ready."""
    from playwright.sync_api import sync_playwright

    ready = threading.Event()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(url, wait_until="load", timeout=120_000)
        page.get_by_label("Model (or type a Hub id OWNER/NAME)").first.click()
        page.get_by_role("option", name="dsb2018-unet (bundled)").click()
        page.get_by_role("tab", name="Teach it your images").click()
        page.locator("#uploads input[type=file]").set_input_files(str(archive))
        page.get_by_role("button", name="Keep the uploaded pairs").click()
        page.locator("#kept-note").get_by_text("3 pairs kept").wait_for(timeout=60_000)
        page.get_by_role("button", name="Fine-tune the chosen model on the kept pairs").click()
        found: list[float] = []
        sender = threading.Thread(target=lambda: found.extend(latencies(client, 600, ready)))
        sender.start()
        page.locator("#finetuned").get_by_text("is ready").wait_for(timeout=600_000)
        ready.set()
        sender.join()
        browser.close()
    return found


def describe(name: str, values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]
    return f"| {name} | {len(values)} | {statistics.median(values):.2f} | {p95:.2f} |"


def main() -> None:
    from gradio_client import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 folder")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="finetune-load-"))
    write_pairs(brightfield(parse_spec(f"dsb2018:{args.data}").splits()["train"])[:3], work)
    try:
        for _ in range(180):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not up yet
                time.sleep(1)
        segment(client)  # not counted: the model's first load and run
        alone = latencies(client, args.seconds)
        during = fine_tune_in_the_page(f"http://127.0.0.1:{port}/", zipped(work), client)
    finally:
        server.terminate()
    print("| Segment requests (histology example) | answered | median (s) | p95 (s) |")
    print("| --- | ---: | ---: | ---: |")
    print(describe("alone", alone))
    print(describe("during a 90 s fine-tune", during))


if __name__ == "__main__":
    main()
