"""Training throughput: the data pipeline on small and large images, and bioseg's trainer beside
a plain PyTorch loop on the same model and data.

    python benchmarks/bench_train.py [--models unet timm/resnet18] [--sizes 224 512]
    python benchmarks/bench_train.py --models        # the data pipeline only

First, the data pipeline alone (one process, no model): training samples per second, 128x128
crops with the default augmentation, from 300x300 and from 1000x1000 images (8 PNGs each, 256
samples in a shuffled order, median of 5 passes, the four cases timed in turns): bioseg's
(crop first, then augment the crop; images decoded once) against the previous pipeline (affine
and colour jitter on the whole image, then the crop; images decoded again whenever the last 8
read do not hold them).

For each model and size, in the same run: `python -m trainers.train` for one epoch over synthetic
images of that size (its images/s from metrics.csv: data loading, augmentation, loss, optimizer),
and a plain loop (the same model, Dice+IoU loss and Adam, over the same images already in memory).
Each runs in its own process so that its peak memory (max RSS on the CPU, max allocated on CUDA)
is its own. On CUDA both use bf16 autocast; on the CPU float32.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODEL_KWARGS = {"unet": {"base_channels": 16}}


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    for index in range(count):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{index}.png")
        Image.fromarray((image[..., 0] > 128).astype(np.uint8) * 255).save(
            folder / "masks" / f"{index}.png"
        )


def previous_transform(size: int):
    """The pipeline before crop-first: affine and jitter on the whole image, then the crop."""
    from torchvision.transforms import v2

    from trainers.data import SegmentationTransform

    steps = v2.Compose([
        v2.RandomAffine(degrees=15.0, scale=(0.75, 1.25),
                        interpolation=v2.InterpolationMode.BILINEAR),
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
        v2.RandomCrop(size, pad_if_needed=True),
    ])  # fmt: skip
    return SegmentationTransform(steps, mean=(0.5,) * 3, std=(0.25,) * 3)


def pipeline_rows(samples: int = 256, crop: int = 128) -> list[str]:
    """Samples per second of the data pipeline: ours and the previous, small and large images."""
    import torch
    from bench_zoo import paired_medians

    from trainers.data import SegmentationDataset, parse_spec, train_transform

    torch.set_num_threads(1)  # one loader worker's share
    cases = {}
    for side in (300, 1000):
        folder = Path(tempfile.mkdtemp())
        make_images(folder, 8, side)
        items = parse_spec(f"folder:{folder}").splits()["train"]
        ours = SegmentationDataset(items, train_transform(crop, mean=(0.5,) * 3, std=(0.25,) * 3),
                                   patches_per_image=samples // 8)  # fmt: skip
        ours.keep_all()
        previous = SegmentationDataset(
            items, previous_transform(crop), patches_per_image=samples // 8
        )
        cases[side] = (ours, previous)
    order = np.random.default_rng(0).permutation(samples)

    def run(dataset) -> None:
        for index in order:
            dataset[int(index)]

    runs = [lambda d=d: run(d) for side in (300, 1000) for d in cases[side]]
    ours_300, previous_300, ours_1000, previous_1000 = (
        samples / t for t in paired_medians(runs, repeats=5)
    )
    return [
        f"| pipeline ({crop}x{crop} crops) | from 300x300 | from 1000x1000 | 1000 / 300 |",
        "| --- | ---: | ---: | ---: |",
        f"| bioseg (crop first, decoded once) | {ours_300:.0f}/s | {ours_1000:.0f}/s "
        f"| {ours_1000 / ours_300:.2f} |",
        f"| previous (whole-image augmentation) | {previous_300:.0f}/s | {previous_1000:.0f}/s "
        f"| {previous_1000 / previous_300:.2f} |",
        f"| bioseg / previous | {ours_300 / previous_300:.1f}x "
        f"| {ours_1000 / previous_1000:.1f}x | |",
    ]


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_loop(model_name: str, size: int, count: int, batch: int) -> dict[str, float]:
    """The same model, loss and optimizer over in-memory tensors: no data pipeline."""
    import torch

    import zoo
    from trainers.fit.losses import DiceIoULoss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = zoo.create_model(model_name, **MODEL_KWARGS.get(model_name, {})).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = DiceIoULoss()
    images = torch.randn(count, 3, size, size, device=device)
    masks = (torch.rand(count, size, size, device=device) > 0.5).long()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    start = time.perf_counter()
    for first in range(0, count - batch + 1, batch):
        with autocast:
            logits = model(images[first : first + batch])
        loss = loss_fn(logits.float(), masks[first : first + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seen = (count // batch) * batch
    return {"images_per_s": seen / (time.perf_counter() - start), "peak_mb": peak_memory_mb()}


def trainer_run(model_name: str, size: int, count: int, batch: int) -> dict[str, float]:
    """One epoch of `python -m trainers.train` (in this process), its images/s from metrics.csv."""
    from trainers.train import main

    folder = Path(tempfile.mkdtemp())
    make_images(folder / "data", count + 1, size)  # one image more: the validation split
    main(
        [
            "--model", model_name, "--model-kwargs", json.dumps(MODEL_KWARGS.get(model_name, {})),
            "--data", f"folder:{folder / 'data'}", "--output", str(folder / "run"),
            "--plan", "none", "--epochs", "1", "--val-every", "1000000",
            "--batch-size", str(batch), "--image-size", str(size),
            "--val-fraction", str(1 / (count + 1)), "--workers", "1", "--no-evaluate",
        ]
    )  # fmt: skip
    with (folder / "run" / "metrics.csv").open() as handle:
        row = next(csv.DictReader(handle))
    return {"images_per_s": float(row["images_per_s"]), "peak_mb": peak_memory_mb()}


def measure_in_subprocess(kind: str, model: str, size: int, count: int, batch: int) -> dict:
    code = (
        f"import json, sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]\n"
        "import bench_train\n"
        f"print('RESULT', json.dumps(bench_train.{kind}({model!r}, {size}, {count}, {batch})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.rsplit("RESULT ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=["unet", "timm/resnet18"], help="none: the pipeline only"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
    parser.add_argument("--images", type=int, default=16, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    import torch

    print("\n".join(pipeline_rows()) + "\n")
    if not args.models:
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU, float32"
    print(f"device: {device}; {args.images} images per run, batch {args.batch_size}\n")
    print(
        "| model | size | bioseg trainer img/s | plain loop img/s | trainer / plain "
        "| trainer peak MB | plain peak MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        for size in args.sizes:
            ours = measure_in_subprocess("trainer_run", model, size, args.images, args.batch_size)
            plain = measure_in_subprocess("plain_loop", model, size, args.images, args.batch_size)
            print(
                f"| `{model}` | {size} | {ours['images_per_s']:.2f} | "
                f"{plain['images_per_s']:.2f} | {ours['images_per_s'] / plain['images_per_s']:.2f} "
                f"| {ours['peak_mb']:.0f} | {plain['peak_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
