"""Inference engines on this CPU: eager PyTorch, torch.compile, ONNX Runtime and OpenVINO.

    python benchmarks/bench_engines.py     # also the first table of bench_app.py

For the bundled `drive-unet` and a `timm/resnet34` U-Net (random weights: speed only), batch 1,
at 512x512 and 1024x1024, all with the same number of threads (2 unless BIOSEG_BENCH_THREADS):
the median of 5 timed runs of each engine, the engines timed in turns, after one warm-up run
each (torch.compile's compilation and the ONNX export happen there, not in the figures).
Each engine's probabilities are compared with eager float32 on the same input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_zoo import paired_medians  # noqa: E402

import zoo  # noqa: E402

THREADS = int(os.environ.get("BIOSEG_BENCH_THREADS", 2))
SIZES = (512, 1024)


def _models() -> dict[str, zoo.SegmentationModel]:
    torch.manual_seed(0)
    return {
        "drive-unet (bundled)": zoo.from_pretrained(ROOT / "weights" / "drive-unet"),
        "timm/resnet34": zoo.create_model("timm/resnet34").eval(),
    }


def _compiled(model: zoo.SegmentationModel) -> Callable:
    net = torch.compile(model.net, dynamic=False)

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x).sigmoid()

    return predict


def engine_table() -> list[str]:
    """Markdown rows: engine, model, size, median ms, ratio to eager, max |p - p_eager|."""
    torch.set_num_threads(THREADS)
    rows = [
        f"| engine ({THREADS} threads) | model | size | ms | / eager | max abs. diff. |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, model in _models().items():
        engines = {"eager PyTorch": model.predict_normalized, "torch.compile": _compiled(model)}
        for name in ("onnxruntime", "openvino"):
            engines[name], used = zoo.engine_predict(model, name, threads=THREADS)
            assert used == name, f"{name} could not run {label}: see the log"
        for size in SIZES:
            x = torch.rand(
                1, model.in_channels, size, size, generator=torch.Generator().manual_seed(0)
            )
            reference = model.predict_normalized(x)
            runs = [lambda p=predict, x=x: p(x) for predict in engines.values()]
            medians = paired_medians(runs, repeats=5)
            for (name, predict), ms in zip(engines.items(), medians, strict=True):
                diff = (predict(x) - reference).abs().max().item()
                rows.append(
                    f"| {name} | {label} | {size} | {ms * 1e3:.0f} | {ms / medians[0]:.2f} "
                    f"| {diff:.1e} |"
                )
    return rows


if __name__ == "__main__":
    print("\n".join(engine_table()))
