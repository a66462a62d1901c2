"""The web demo's speed on this CPU, in one run: engines, tile size, a request's parts, the app.

    python benchmarks/bench_app.py
    python benchmarks/bench_app.py --predict   # only the scripts' endpoint against its bounds

Prints, for the default model (the first listed, `drive-unet`):
1. the engine table of `bench_engines.py` (eager, torch.compile, ONNX Runtime, OpenVINO);
2. the tile size: tiled prediction of a 2048x2048 image through the app's engine, per tile
   size from 256 to 1024 (one run each, after a warm-up);
3. where a request's time goes, in this process (cProfile of the app's `segment`, one run
   each after a warm-up) for scikit-image's 1411x1411 retina resized to 512x512 (a PNG), the
   retina itself and a 4096x4096 TIFF of noise; "Gradio and transfer" is the same request
   through gradio_client minus `segment`;
4. `python app.py` on a free localhost port: start-up; the 512x512 request through
   gradio_client with its defaults (downloading every output file), through gradio_client
   with `ssl_verify=False` (the URL is plain http, so nothing is verified either way; the
   option only stops httpx loading its CA bundle for each of the seven connections a request
   opens), through gradio_client with `download_files=False` (the answer, its files left on
   the server), the same request as the page makes it (one kept-alive connection: upload,
   queue, event stream, then the images the page shows), and an eager float32 forward of the
   same model in this process (median of 5 each, the five timed in turns); the retina
   (median of 5) and the 4096x4096 TIFF (median of 3) through gradio_client; the server's
   peak resident memory after them all;
5. what one new httpx connection costs, with and without its CA bundle (median of 20);
6. the scripts' endpoint `/predict` on a 512x512 noise image through gradio_client with its
   defaults (and with `ssl_verify=False`), an eager float32 forward of the same model, and the
   client's own floor: a no-op endpoint of the same shape (a file and three values in, the file
   and a small dict out) served by a bare Gradio app beside it (median of 5 each, timed in turns
   after a warm-up). Bounds: /predict at most 1.3x the forward, and its cost above the floor
   at most 1.0x the forward.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_engines import THREADS, engine_table  # noqa: E402
from bench_zoo import paired_medians  # noqa: E402

import zoo  # noqa: E402
from demo import serving  # noqa: E402
from trainers.scores import scoring  # noqa: E402

TILES = (256, 384, 512, 768, 1024)
# Stages of a request: the functions whose cumulative time makes each (file, function name).
STAGES = {
    "read the file": [("readers.py", "read_decoded")],
    "normalise": [("_spec.py", "match_channels"), ("_spec.py", "normalize")],
    "forward (engine)": [("_engines.py", "predict"), ("_model.py", "predict")],
    "contrast-stretched RGB for display": [("overlays.py", "display_rgb")],
    "overlays": [("overlays.py", "overlay")],
    "error map": [("plots.py", "error_map")],
    "PNG encoding (views, mask)": [("views.py", "write_pngs")],
}


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


def test_images(folder: Path) -> dict[str, Path]:
    import skimage

    retina = Path(skimage.data.__file__).parent / "retina.jpg"
    images = {
        "512x512 PNG": folder / "retina-512.png",
        "retina.jpg, 1411x1411": retina,
        "4096x4096 TIFF": folder / "4096.tif",
    }
    Image.open(retina).resize((512, 512), Image.Resampling.LANCZOS).save(images["512x512 PNG"])
    noise = np.random.default_rng(0).integers(0, 255, (4096, 4096), dtype=np.uint8)
    Image.fromarray(noise).save(images["4096x4096 TIFF"])
    return images


def tile_rows(served: serving.Served) -> list[str]:
    """Seconds for a 2048x2048 image per tile size, through the app's engine."""
    image = np.random.default_rng(1).random((2048, 2048, 3), dtype=np.float32)
    x = serving.channels_first(image)[None]
    rows = [
        "| tile | tiles | s for 2048x2048 | us per image pixel |",
        "| ---: | ---: | ---: | ---: |",
    ]
    count: list[int] = []  # tiles per image, as reported to `progress`
    for tile in TILES:

        def run(tile: int = tile) -> None:
            zoo.sliding_window_predict(
                served.model, x, tile=tile, overlap=scoring.OVERLAP, predict=served.predict,
                progress=lambda done, total: count.append(total),
            )  # fmt: skip

        run()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        rows.append(f"| {tile} | {count[-1]} | {seconds:.2f} | {seconds / 2048**2 * 1e6:.3f} |")
    return rows


def stage_seconds(run: Callable[[], object]) -> tuple[dict[str, float], float]:
    """Cumulative seconds per stage of one call of `run`, and the call's total."""
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(run)
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    seconds = {}
    for stage, functions in STAGES.items():
        seconds[stage] = sum(
            ct
            for (file, _, name), (_, _, _, ct, _) in stats.items()
            if (Path(file).name, name) in functions
        )
    return seconds, total


def _cells(seconds) -> str:
    return " | ".join(f"{s * 1e3:.0f}" for s in seconds) + " |"


def profile_rows(demo_app, label: str, images: dict[str, Path], client_seconds: dict) -> list[str]:
    names = list(images)
    rows = [f"| stage (ms) | {' | '.join(names)} |", "| --- |" + " ---: |" * len(names)]
    columns = []
    for path in images.values():

        def run(path: Path = path) -> None:
            demo_app.segment(label, None, str(path), None, 0.5, progress=None)

        run()  # warm-up
        columns.append(stage_seconds(run))
    for stage in STAGES:
        rows.append(f"| {stage} | " + _cells(c[0][stage] for c in columns))
    rows.append("| **`segment` in all** | " + _cells(c[1] for c in columns))
    gradio = [client_seconds[name] - c[1] for name, c in zip(names, columns, strict=True)]
    rows.append("| Gradio and transfer (client - `segment`) | " + _cells(gradio))
    rows.append("| **request through gradio_client** | " + _cells(client_seconds[n] for n in names))
    return rows


def start_app(port: int) -> tuple[subprocess.Popen, object, float]:
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = _client(f"http://127.0.0.1:{port}/", server)
    return server, client, time.perf_counter() - started


def _files(value: object) -> list[str]:
    """The URLs of the files in an answer's outputs."""
    if isinstance(value, dict):
        if value.get("meta", {}).get("_type") == "gradio.FileData":
            return [value["url"]]
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [url for item in value for url in _files(item)]
    return []


def connection_seconds(verify: bool) -> float:
    """Seconds to make and close one httpx client, as gradio_client does per connection."""
    start = time.perf_counter()
    httpx.Client(verify=verify).close()
    return time.perf_counter() - start


class Page:
    """Segment clicks as the page makes them, on one kept-alive connection: upload the image,
    join the queue, read the event stream up to the answer, and fetch each image the page
    shows once (the mask file is fetched only when a visitor clicks it)."""

    def __init__(self, root: str) -> None:
        self.root, self.http = root, httpx.Client(timeout=300)
        config = self.http.get(f"{root}/config").json()
        self.segment = next(
            d["id"] for d in config["dependencies"] if d.get("api_name") == "segment"
        )

    def click(self, label: str, path: Path) -> None:
        root, http = self.root, self.http
        with path.open("rb") as file:
            uploaded = http.post(f"{root}/gradio_api/upload", files=[("files", (path.name, file))])
        image = {"path": uploaded.json()[0], "orig_name": path.name,
                 "meta": {"_type": "gradio.FileData"}}  # fmt: skip
        session = uuid.uuid4().hex
        http.post(
            f"{root}/gradio_api/queue/join",
            json={"data": [label, None, image, None, 0.5, 0], "fn_index": self.segment,
                  "session_hash": session, "event_data": None, "trigger_id": None},
        ).raise_for_status()  # fmt: skip
        stream = http.stream(
            "GET", f"{root}/gradio_api/queue/data", params={"session_hash": session}
        )
        with stream as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    views = message["output"]["data"][:4]  # target, prediction, errors, slider
                    break
        for url in set(_files(views)):
            http.get(url).raise_for_status()


def measure_requests(demo_app, label: str, served, images: dict[str, Path]) -> dict:
    """The app served in a subprocess: its start-up, its first answer, the 512x512 request five
    ways against the eager forward (in turns), the large requests and the peak memory."""
    from gradio_client import Client, handle_file

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    server, client, startup = start_app(port)
    try:
        answer_only = Client(f"{root}/", verbose=False, download_files=False)
        no_ca_bundle = Client(f"{root}/", verbose=False, ssl_verify=False)

        def request(path: Path, through=client) -> float:
            start = time.perf_counter()
            through.predict(label, None, handle_file(str(path)), None, 0.5, api_name="/segment")
            return time.perf_counter() - start

        first = request(images["512x512 PNG"])
        small = images["512x512 PNG"]
        image = np.asarray(Image.open(small).convert("RGB"), dtype=np.float32) / 255
        spec = served.model.spec
        x = zoo.normalize(serving.channels_first(image)[None], spec.mean, spec.std)
        page = Page(root)
        via = paired_medians(
            [lambda: request(small), lambda: request(small, no_ca_bundle),
             lambda: request(small, answer_only), lambda: page.click(label, small),
             lambda: served.model.predict_normalized(x)], 5,
        )  # fmt: skip
        large = {
            name: statistics.median(request(images[name]) for _ in range(repeats))
            for name, repeats in (("retina.jpg, 1411x1411", 5), ("4096x4096 TIFF", 3))
        }
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"startup": startup, "first": first, "via": via, "large": large, "peak": peak}


def app_rows(found: dict) -> list[tuple[str, str, str]]:
    """The app table: each figure with the bound it is held to."""
    via_client, via_plain, via_answer, via_page, eager = found["via"]
    retina, large = found["large"]["retina.jpg, 1411x1411"], found["large"]["4096x4096 TIFF"]
    rows = [
        ("start-up, process start to port answering", f"{found['startup']:.1f} s", ""),
        ("first answer, 512x512", f"{found['first']:.2f} s", ""),
        ("eager float32 forward, same model and image (median of 5)", f"{eager * 1e3:.0f} ms", ""),
    ]
    for how, seconds, bound in (
        ("through gradio_client, defaults", via_client, ""),
        ("through gradio_client, `ssl_verify=False`", via_plain, "1.3"),
        ("through gradio_client, files left on the server (`download_files=False`)",
         via_answer, ""),
        ("as the page makes it", via_page, ""),
    ):  # fmt: skip
        rows.append((f"512x512 request {how} (median of 5)", f"{seconds * 1e3:.0f} ms", ""))
        rows.append(("the same / eager forward", f"{seconds / eager:.2f}", bound))
    return [
        *rows,
        ("retina.jpg 1411x1411 request (median of 5)", f"{retina:.2f} s", "4 s"),
        ("retina request / eager 512x512 forward", f"{retina / eager:.1f}", "8.7"),
        ("4096x4096 TIFF request (median of 3)", f"{large:.1f} s", "25 s"),
        ("server peak resident memory (VmHWM) after all", f"{found['peak']:.0f} MB", "1500 MB"),
    ]


def floor_app(port: int) -> None:
    """A bare Gradio app whose `/predict` takes the same inputs as the app's and answers the
    uploaded file with a small dict, doing nothing: what any such call costs a client."""
    import gradio as gr

    def echo(model: str, image: str, threshold: float | None, frame: float) -> tuple[str, dict]:
        return image, {"model": model}

    with gr.Blocks() as floor:
        model, image = gr.Textbox(), gr.File(type="filepath")
        threshold, frame = gr.Number(None), gr.Number(0, precision=0)
        mask, record, run = gr.File(), gr.JSON(), gr.Button()
        run.click(echo, [model, image, threshold, frame], [mask, record], api_name="predict")
    floor.queue(default_concurrency_limit=2).launch(server_port=port, quiet=True)


def predict_rows(label: str, served, folder: Path) -> list[tuple[str, str, str]]:
    """`/predict` against the eager forward and the client's floor, timed in turns."""
    from gradio_client import Client, handle_file

    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    path = folder / "noise-512.png"
    Image.fromarray(noise).save(path)
    x = zoo.normalize(
        serving.channels_first(noise.astype(np.float32) / 255)[None],
        served.model.spec.mean,
        served.model.spec.std,
    )
    port, floor_port = free_port(), free_port()
    server, client, _ = start_app(port)
    floor = subprocess.Popen(
        [sys.executable, __file__, "--floor", str(floor_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        floor_client = _client(f"http://127.0.0.1:{floor_port}/", floor)
        plain = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)

        def call(through) -> object:
            return through.predict(label, handle_file(str(path)), None, 0, api_name="/predict")

        predict, bare, unverified, eager = paired_medians(
            [lambda: call(client), lambda: call(floor_client), lambda: call(plain),
             lambda: served.model.predict_normalized(x)], 5,
        )  # fmt: skip
    finally:
        for process in (server, floor):
            process.terminate()
            process.wait(timeout=30)
    return [
        ("eager float32 forward, 512x512 noise (median of 5)", f"{eager * 1e3:.0f} ms", ""),
        ("`/predict` through gradio_client, defaults", f"{predict * 1e3:.0f} ms", ""),
        ("a no-op endpoint of the same shape, defaults", f"{bare * 1e3:.0f} ms", ""),
        ("`/predict`, `ssl_verify=False`", f"{unverified * 1e3:.0f} ms", ""),
        ("`/predict` / eager forward", f"{predict / eager:.2f}", "1.3"),
        ("(`/predict` - no-op) / eager forward", f"{(predict - bare) / eager:.2f}", "1.0"),
        ("no-op / eager forward: the client's floor", f"{bare / eager:.2f}", ""),
        ("`/predict` with `ssl_verify=False` / eager forward", f"{unverified / eager:.2f}", ""),
    ]


def _client(url: str, process: subprocess.Popen):
    """A gradio_client Client of the app at `url`, once it answers."""
    from gradio_client import Client

    started = time.perf_counter()
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:  # not up yet
            if process.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"{url} did not start") from None
            time.sleep(0.25)


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n## {title}\n\n| measure | value | bound |\n| --- | ---: | ---: |")
    print("\n".join(f"| {measure} | {value} | {bound} |" for measure, value, bound in rows))


def main() -> None:
    if sys.argv[1:2] == ["--floor"]:
        return floor_app(int(sys.argv[2]))
    from demo.models import Models
    from demo.segment import Segmenter
    from demo.settings import settings_from_environment

    models = Models.of(settings_from_environment())  # as `import app` builds the page's
    demo_app = Segmenter(models, models.settings.max_pixels)
    label = models.catalogue.default
    if sys.argv[1:2] == ["--predict"]:
        served = models.load(models.catalogue.choices[label])
        rows = predict_rows(label, served, Path(tempfile.mkdtemp()))
        return print_table(f"The scripts' endpoint (engine {served.engine}, {label})", rows)

    torch.set_num_threads(THREADS)
    print("## Engines\n\n" + "\n".join(engine_table()))
    served = models.load(models.catalogue.choices[label])
    print(f"\n## Tile size ({served.engine}, {label}, overlap {scoring.OVERLAP})\n")
    print("\n".join(tile_rows(served)))
    images = test_images(Path(tempfile.mkdtemp()))
    found = measure_requests(demo_app, label, served, images)
    client_seconds = {"512x512 PNG": found["via"][0], **found["large"]}
    print(f"\n## Where a request's time goes ({served.engine}, {label})\n")
    print("\n".join(profile_rows(demo_app, label, images, client_seconds)))
    print_table(f"The app (`python app.py`, engine {served.engine}, {label})", app_rows(found))
    print("\n## One new httpx connection (`httpx.Client()` made and closed, median of 20), as")
    print("gradio_client opens for each upload, queue join, event stream and output file\n")
    print("| CA bundle loaded | ms |\n| --- | ---: |")
    for verify, name in ((True, "yes (the default)"), (False, "no (`verify=False`)")):
        seconds = statistics.median(connection_seconds(verify) for _ in range(20))
        print(f"| {name} | {seconds * 1e3:.1f} |")
    rows = predict_rows(label, served, images["512x512 PNG"].parent)
    print_table(f"The scripts' endpoint (engine {served.engine}, {label})", rows)


if __name__ == "__main__":
    main()
