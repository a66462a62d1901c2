"""The README's screenshots: the demo on the DSB 2018 histology example (CC0; never DRIVE or
ISBI 2012 images), and its Volumes tab on the hippocampus example (MSD, CC-BY-SA 4.0), taken in
Debian's Chromium through Playwright.

    python benchmarks/screenshot.py docs/demo.png
    python benchmarks/screenshot.py docs/demo-volume.png --volume
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip


def image_example(page) -> None:
    """The histology example, segmented; the page scrolled back to its top."""
    page.get_by_text("histology-a08166d9_mask.png").first.click(timeout=60_000)
    page.get_by_text("true positive").wait_for(timeout=180_000)
    page.locator("table", has_text="nucleus").first.wait_for(timeout=60_000)
    time.sleep(2)  # the images finish loading
    page.evaluate("window.scrollTo(0, 0)")  # the example's click scrolled to the table


def volume_example(page) -> None:
    """The Volumes tab's hippocampus example, segmented, scrolled to its views."""
    page.get_by_role("tab", name="Volumes (CT, MRI)").click()
    page.get_by_text("hippocampus_084_seg.nii.gz").first.click(timeout=60_000)
    page.locator("#volume-metrics", has_text="Posterior").wait_for(timeout=180_000)
    time.sleep(4)  # the views and the 3D surfaces finish loading


def main(output: Path, volume: bool = False) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "BIOSEG_RUNS": "/nonexistent"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1500 if volume else 1250})
            page.goto(url, wait_until="load", timeout=120_000)
            (volume_example if volume else image_example)(page)
            time.sleep(1)
            page.screenshot(path=str(output), full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--volume" in sys.argv[2:])
