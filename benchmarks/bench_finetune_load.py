"""Segment requests from another visitor while a fine-tune runs: every answer, and the latency
percentiles beside those of the same requests with nothing else running, in the same run.

    python benchmarks/bench_finetune_load.py --data ../shared/data/DSB2018-nuclei

Starts `python app.py` on a free port; a client sends `/segment` requests on the histology
example one after the other, first alone for `--seconds`, then while the fine-tune of the demo
(`trainers.train --finetune weights/dsb2018-unet`, the code path the Teach tab runs, here in a
process of its own on the same cores) trains for 90 s on 3 DSB 2018 brightfield pairs.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_finetune import BASE, brightfield, write_pairs
from trainers.data import parse_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dsb2018" / "histology-a08166d9.png"


def latencies(client, seconds: float, until=None) -> list[float]:
    from gradio_client import handle_file

    found, end = [], time.monotonic() + seconds
    while time.monotonic() < end and (until is None or until.poll() is None):
        start = time.perf_counter()
        client.predict("dsb2018-unet (bundled)", handle_file(str(EXAMPLE)), None, None, 0.5,
                       api_name="/segment")  # fmt: skip
        found.append(time.perf_counter() - start)
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
        alone = latencies(client, args.seconds)
        command = [sys.executable, "-m", "trainers.train", "--finetune", str(BASE), "--data",
                   f"folder:{work}", "--time-budget", "90s", "--output", str(work / "run"),
                   "--no-evaluate", "--workers", "0"]  # fmt: skip
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        tune = subprocess.Popen(command, cwd=REPO, **quiet)
        time.sleep(5)  # past its start-up, into its steps
        during = latencies(client, 300, until=tune)
        tune.wait()
    finally:
        server.terminate()
    print("| Segment requests (histology example) | answered | median (s) | p95 (s) |")
    print("| --- | ---: | ---: | ---: |")
    print(describe("alone", alone))
    print(describe("during a 90 s fine-tune", during))


if __name__ == "__main__":
    main()
