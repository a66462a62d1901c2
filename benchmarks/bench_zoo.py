"""CPU latency of the zoo's models and of HD95, beside peer libraries measured in the same run.

    python -m venv --system-site-packages .venv-bench
    .venv-bench/bin/pip install -r benchmarks/requirements.txt
    .venv-bench/bin/python benchmarks/bench_zoo.py

Prints Markdown tables: one 512x512 forward (batch 1, eval, inference mode) of every built-in model
beside segmentation_models_pytorch's Unet with the same encoder, torchvision's fcn_resnet50 as a
reference; and HD95 of two 1024x1024 masks beside MONAI's HausdorffDistanceMetric.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo
from trainers.scores import metrics


def paired_medians(runs: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall time of each of `runs`, timed in turns so that load on the machine hits all."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, record in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def forward(model: torch.nn.Module, size: int) -> Callable[[], object]:
    """One batch-1 forward in eval and inference mode."""
    model.eval()
    x = torch.randn(1, 3, size, size)

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def smp_peer(name: str) -> tuple[str, torch.nn.Module]:
    """segmentation_models_pytorch's Unet with the encoder `name` uses."""
    import segmentation_models_pytorch as smp

    # timm/<x>: the same timm encoder through smp's "tu-" bridge; fcn*, vgg16_fcn*: VGG16;
    # unet: smp has no plain U-Net, so its VGG16 U-Net, the nearest classic, stands beside it.
    encoder = "tu-" + name.removeprefix("timm/") if name.startswith("timm/") else "vgg16"
    return f"smp Unet({encoder})", smp.Unet(encoder, encoder_weights=None, classes=1)


def bench_models(size: int, repeats: int, pattern: str) -> None:
    from torchvision.models.segmentation import fcn_resnet50

    print(f"\n### One {size}x{size} forward on the CPU ({torch.get_num_threads()} threads)\n")
    print("| bioseg model | params (M) | bioseg ms | peer | peer ms | bioseg / peer |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for name in zoo.list_models(pattern):
        if zoo.get_spec(name).origin != "built-in":
            continue
        torch.manual_seed(0)
        model = zoo.create_model(name, num_classes=1)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        peer_name, peer = smp_peer(name)
        ours, theirs = paired_medians([forward(model, size), forward(peer, size)], repeats)
        del model, peer
        print(
            f"| `{name}` | {params:.1f} | {ours * 1e3:.0f} | {peer_name} | {theirs * 1e3:.0f} "
            f"| {ours / theirs:.2f} |"
        )
    reference = fcn_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    ms = paired_medians([forward(_DictOutput(reference), size)], repeats)[0] * 1e3
    params = sum(p.numel() for p in reference.parameters()) / 1e6
    print(f"| (reference) torchvision `fcn_resnet50` | {params:.1f} | {ms:.0f} | | | |")


class _DictOutput(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def random_blob_masks(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping masks of smooth random blobs, like a prediction and its target."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 64)
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 256)
    target = field > 0.5 * field.std()
    pred = field + 0.3 * field.std() / noise.std() * noise > 0.5 * field.std()
    return pred, target


def bench_hd95(size: int, repeats: int) -> None:
    from monai.metrics import HausdorffDistanceMetric

    pred, target = random_blob_masks(size)
    ours = metrics.hd95(pred, target)
    monai_metric = HausdorffDistanceMetric(percentile=95, include_background=True)
    y_pred = torch.from_numpy(pred)[None, None].float()
    y = torch.from_numpy(target)[None, None].float()

    def run_monai() -> float:
        monai_metric.reset()
        return float(monai_metric(y_pred, y).item())

    theirs = run_monai()
    ours_s, theirs_s = paired_medians([lambda: metrics.hd95(pred, target), run_monai], repeats)
    print(f"\n### HD95 of two {size}x{size} masks\n")
    print("| implementation | HD95 (px) | ms | bioseg / MONAI |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| bioseg `trainers.scores.metrics.hd95` | {ours:.3f} | {ours_s * 1e3:.1f} | "
        f"{ours_s / theirs_s:.2f} |"
    )
    print(
        f"| MONAI `HausdorffDistanceMetric(percentile=95)` | {theirs:.3f} | "
        f"{theirs_s * 1e3:.1f} | 1.00 |"
    )
    if not np.isclose(ours, theirs, rtol=1e-4):
        raise SystemExit(f"HD95 disagrees with MONAI: {ours} != {theirs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="forward input size")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (median)")
    parser.add_argument("--models", default="*", help="shell-style filter on model names")
    parser.add_argument("--mask-size", type=int, default=1024)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    bench_models(args.size, args.repeats, args.models)
    bench_hd95(args.mask_size, max(args.repeats, 5))


if __name__ == "__main__":
    main()
