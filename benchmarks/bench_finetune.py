"""A model taught a visitor's images: `dsb2018-unet`, out of its domain on DSB 2018's brightfield
images, fine-tuned on the masks of 3 brightfield training images (standing in for painted ones)
for 90 s on this CPU, scored before and after on the brightfield images of the test split.

    python benchmarks/bench_finetune.py --data ../shared/data/DSB2018-nuclei

Runs `python -m trainers.train --finetune weights/dsb2018-unet --data folder:PAIRS
--time-budget 90s` (the shared code path the demo's fine-tune runs) and `trainers.evaluate`
on both models; prints a Markdown table. The 3 images are the first brightfield ones of the
training split in id order (a rule, not a pick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pick_examples import kind_of
from trainers.data import parse_spec
from trainers.data.readers import read_image, read_masks_union

BASE = Path(__file__).resolve().parents[1] / "weights" / "dsb2018-unet"


def brightfield(samples) -> list:
    chosen = []
    for sample in samples:
        image = read_image(sample.image)
        if kind_of(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) == "brightfield":
            chosen.append(sample)
    return chosen


def write_pairs(samples, folder: Path) -> None:
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        Image.open(sample.image).convert("RGB").save(folder / "images" / f"{sample.id}.png")
        mask = read_masks_union(sample.masks).astype(np.uint8) * 255
        Image.fromarray(mask).save(folder / "masks" / f"{sample.id}.png")


def dice_of(weights: Path, data: Path, output: Path) -> float:
    subprocess.run([sys.executable, "-m", "trainers.evaluate", "--weights", str(weights),
                    "--data", f"folder:{data}", "--split", "test", "--output", str(output),
                    "--overwrite"], check=True, capture_output=True)  # fmt: skip
    return json.loads((output / "summary.json").read_text())["metrics"]["dice"]["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 folder")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--budget", default="90s")
    parser.add_argument("--output", type=Path, default=Path("runs/bench-finetune"))
    args = parser.parse_args()
    splits = parse_spec(f"dsb2018:{args.data}").splits()
    train, test = brightfield(splits["train"])[: args.pairs], brightfield(splits["test"])
    work = Path(tempfile.mkdtemp(prefix="finetune-"))
    write_pairs(train, work / "train")
    write_pairs(test, work / "test")
    shutil.rmtree(args.output, ignore_errors=True)
    command = [sys.executable, "-m", "trainers.train", "--finetune", str(BASE), "--data",
               f"folder:{work}", "--time-budget", args.budget, "--output", str(args.output),
               "--no-evaluate"]  # fmt: skip
    subprocess.run(command, check=True)
    before = dice_of(BASE, work, args.output / "eval-base")
    after = dice_of(args.output, work, args.output / "eval")
    print(f"\n{len(train)} brightfield training pairs ({', '.join(s.id[:8] for s in train)}), "
          f"{len(test)} brightfield test images, fine-tuned for {args.budget}\n")  # fmt: skip
    print("| model | brightfield test Dice (mean per image) |\n| --- | ---: |")
    print(f"| dsb2018-unet (bundled) | {before:.3f} |")
    print(f"| + {len(train)} brightfield images, {args.budget} | {after:.3f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
