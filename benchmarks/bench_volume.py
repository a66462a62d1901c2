"""A large CT through the volume pipeline: its time and peak resident memory on this machine.

    python benchmarks/bench_volume.py                 # 512 x 512 x 300, 0.8 x 0.8 x 1.5 mm
    python benchmarks/bench_volume.py --size 256 256 100

A synthetic CT (int16 Hounsfield units: air, a body of soft tissue, bone, noise) is written as
an uncompressed NIfTI, then one fresh process reads it (`read_volume`), predicts it with the
bundled volume model's architecture and recipe (`weights/hippocampus-unet3d`: its weights, or
random ones with `--random`; resampled to its 1 mm spacing, 3D sliding windows with Gaussian
blending) and writes the label volume in the input's geometry (`write_labels`). Each stage's
seconds and the process's peak resident memory (`ru_maxrss`) are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights" / "hippocampus-unet3d"
LIMIT_GB = 4.0

CHILD = """
import json, resource, sys, time
import torch
import zoo
from trainers.volumes.image import read_volume, write_labels
from trainers.volumes.infer import predict_volume
path, weights, output, precision = sys.argv[1:5]
torch.manual_seed(0)
model = zoo.from_pretrained(weights)
if len(sys.argv) > 5:  # --random: the architecture with fresh weights
    model.load_state_dict(zoo.create_model(model.spec.name, num_classes=model.num_classes,
        in_channels=model.in_channels, **model.build_kwargs).state_dict())
seconds = {}
started = time.perf_counter()
volume = read_volume(path)
seconds["read"] = time.perf_counter() - started
started = time.perf_counter()
labels = predict_volume(model, volume, precision=precision)
seconds["predict"] = time.perf_counter() - started
started = time.perf_counter()
write_labels(labels, volume, output)
seconds["write"] = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB -> GB
print(json.dumps({"seconds": seconds, "peak_gb": peak, "shape": list(volume.shape)}))
"""


def synthetic_ct(
    size: tuple[int, int, int], spacing: tuple[float, float, float], path: Path
) -> None:
    """A CT-like volume of `size` (x, y, z) voxels at `spacing` mm, as int16 HU."""
    import nibabel as nib
    import numpy as np

    x, y, z = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:y, :x]
    body = ((xx - x / 2) / (0.42 * x)) ** 2 + ((yy - y / 2) / (0.35 * y)) ** 2 < 1
    spine = ((xx - x / 2) / (0.05 * x)) ** 2 + ((yy - 0.7 * y) / (0.05 * y)) ** 2 < 1
    plane = np.where(body, 40, -1000).astype(np.int16)
    plane[spine] = 700
    volume = np.empty((x, y, z), np.int16)
    for k in range(z):
        volume[:, :, k] = plane.T + rng.integers(-20, 21, (x, y), dtype=np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], help="x y z")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5], help="mm")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--random", action="store_true", help="the architecture, fresh weights")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.nii"
        synthetic_ct(tuple(args.size), tuple(args.spacing), path)
        command = [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(args.weights),
            str(Path(folder) / "seg.nii.gz"),
            args.precision,
        ]
        found = subprocess.run(
            command + (["random"] if args.random else []), capture_output=True, text=True, cwd=REPO
        )
        if found.returncode:
            raise SystemExit(found.stderr)
    result = json.loads(found.stdout.strip().splitlines()[-1])
    size = "x".join(map(str, args.size))
    spacing = " x ".join(f"{s:g}" for s in args.spacing)
    print("| volume | stage | seconds |\n| --- | --- | ---: |")
    for stage, seconds in result["seconds"].items():
        print(f"| {size} at {spacing} mm | {stage} | {seconds:.1f} |")
    verdict = "within" if result["peak_gb"] <= LIMIT_GB else "OVER"
    peak = result["peak_gb"]
    print(f"\npeak resident memory {peak:.2f} GB ({verdict} the {LIMIT_GB:g} GB bound)")


if __name__ == "__main__":
    main()
