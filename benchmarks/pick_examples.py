"""Pick the demo's DSB 2018 examples by a stated rule, and write them to examples/dsb2018/.

    python -m trainers.evaluate --weights weights/dsb2018-unet \
        --data dsb2018:../shared/data/DSB2018-nuclei --output runs/dsb2018-unet-eval
    python benchmarks/pick_examples.py runs/dsb2018-unet-eval ../shared/data/DSB2018-nuclei

The rule (examples/README.md): test-split images only; each sorted into a kind by its colour
(histology: coloured; fluorescence: grey on a dark background; brightfield: grey on a light
one); of each kind, among the images whose Dice is within 0.1 of the model's test mean, the one
closest to that kind's median Dice. Typical cases, not the best ones; a kind with no such image
gets no example (the model is out of its domain there), and the script says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.readers import read_image, read_objects

KINDS = ("fluorescence", "brightfield", "histology")
MAX_BYTES = 1_500_000


def kind_of(image: np.ndarray) -> str:
    """Histology if the channels differ, else fluorescence (dark) or brightfield (light)."""
    spread = float(np.abs(image - image.mean(axis=2, keepdims=True)).mean())
    if spread > 0.02:
        return "histology"
    return "fluorescence" if float(np.median(image)) < 0.5 else "brightfield"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", type=Path, help="trainers.evaluate output folder")
    parser.add_argument("data", type=Path, help="the DSB 2018 folder (stage1_train/...)")
    parser.add_argument("--output", type=Path, default=Path("examples/dsb2018"))
    args = parser.parse_args()
    summary = json.loads((args.evaluation / "summary.json").read_text())
    mean = summary["metrics"]["dice"]["mean"]
    with (args.evaluation / "per_image.csv").open(newline="") as file:
        dice = {row["id"]: float(row["dice"]) for row in csv.DictReader(file)}
    by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for image_id in dice:
        image = read_image(args.data / "stage1_train" / image_id / "images" / f"{image_id}.png")
        by_kind[kind_of(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)].append(
            image_id
        )
    args.output.mkdir(parents=True, exist_ok=True)
    for kind, ids in by_kind.items():
        median = statistics.median(dice[i] for i in ids)
        typical = [i for i in ids if abs(dice[i] - mean) <= 0.1]
        if not typical:
            low, high = min(dice[i] for i in ids), max(dice[i] for i in ids)
            print(
                f"{kind}: {len(ids)} test images, Dice {low:.3f} to {high:.3f}, none within 0.1 "
                f"of the model mean {mean:.3f}: no example (out of the model's domain)"
            )
            continue
        chosen = min(typical, key=lambda i: abs(dice[i] - median))
        folder = args.data / "stage1_train" / chosen
        image = Image.open(folder / "images" / f"{chosen}.png").convert("RGB")
        labels = read_objects(sorted((folder / "masks").glob("*.png")))  # an id per nucleus
        stem = f"{kind}-{chosen[:8]}"
        image.save(args.output / f"{stem}.png", optimize=True)
        Image.fromarray(labels.astype(np.uint16)).save(args.output / f"{stem}_mask.png")
        print(
            f"{kind}: {len(ids)} test images, median Dice {median:.3f}; chose {chosen} "
            f"({image.width} x {image.height}), Dice {dice[chosen]:.3f} (model mean {mean:.3f})"
        )
    total = sum(path.stat().st_size for path in args.output.glob("*.png"))
    print(f"{total:,} bytes in {args.output}")
    if total > MAX_BYTES:
        raise SystemExit(f"the examples take {total:,} bytes, over {MAX_BYTES:,}")


if __name__ == "__main__":
    main()
