"""A model taught a visitor's images by the planned fine-tune, two cases, each fine-tuned for
90 s on this CPU and scored before and after:

    python benchmarks/bench_finetune.py --dsb ../shared/data/DSB2018-nuclei
    python benchmarks/bench_finetune.py --drive ../shared/data/DRIVE

- `--dsb`: `dsb2018-unet`, out of its domain on DSB 2018's brightfield images, fine-tuned on
  the masks of the first 3 brightfield training images (in id order: a rule, not a pick),
  scored on the brightfield test images (`--split val`: on the other brightfield training
  images instead, the set the fine-tune's learning rate was chosen on);
- `--drive`: `drive-unet` fine-tuned on the first 3 DRIVE training images resized to 1.7 times
  their size (standing in for a scanner with finer pixels: the vessels 1.7 times wider), once
  at the scale the plan chooses and once at the base's own (`--scale 1`), scored on the 20
  test images resized alike.

Each runs `python -m trainers.train --finetune BASE --data folder:PAIRS --time-budget 90s` (the
code path the demo's Teach tab runs; flags this script does not know, such as `--lr 1e-3` or
`--no-batch-dice`, go to each fine-tune), prints the
fine-tune plan's lines and a Markdown table of mean Dice per image (`trainers.evaluate`).
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

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
FINER = 1.7  # the DRIVE case's magnification


def brightfield(samples) -> list:
    chosen = []
    for sample in samples:
        image = read_image(sample.image)
        if kind_of(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) == "brightfield":
            chosen.append(sample)
    return chosen


def write_pairs(samples, folder: Path, magnify: float = 1.0) -> None:
    """`samples` as images/ and masks/ PNGs (0/255), resized by `magnify` (bicubic, masks
    nearest)."""
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        image = Image.open(sample.image).convert("RGB")
        mask = Image.fromarray(read_masks_union(sample.masks).astype(np.uint8) * 255)
        if magnify != 1:
            size = (round(image.width * magnify), round(image.height * magnify))
            image, mask = image.resize(size, Image.BICUBIC), mask.resize(size, Image.NEAREST)
        image.save(folder / "images" / f"{sample.id}.png")
        mask.save(folder / "masks" / f"{sample.id}.png")


def summary_on_test(weights: Path, data: str, output: Path) -> dict:
    """`trainers.evaluate`'s summary.json of `weights` on the test split of `data` (KIND:PATH)."""
    subprocess.run([sys.executable, "-m", "trainers.evaluate", "--weights", str(weights),
                    "--data", data, "--split", "test", "--output", str(output), "--overwrite"],
                   check=True, capture_output=True)  # fmt: skip
    return json.loads((output / "summary.json").read_text())


def dice_of(weights: Path, data: Path, output: Path) -> float:
    return summary_on_test(weights, f"folder:{data}", output)["metrics"]["dice"]["mean"]


def finetune(base: Path, data: Path, output: Path, budget: str, *flags: str) -> Path:
    """Fine-tune `base` on `data` for `budget`; prints the plan's lines and how it ended."""
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "trainers.train", "--finetune", str(base), "--data",
               f"folder:{data}", "--time-budget", budget, "--output", str(output),
               "--no-evaluate", *flags]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fine-tune plan"))
    plan = [line for line in lines[start:] if line.startswith("  ")]
    ended = [line for line in lines if line.startswith("ended by")]
    print(f"{' '.join(flags) or 'as planned'}:\n" + "\n".join(plan + ended) + "\n")
    return output


def dsb_case(args: argparse.Namespace, work: Path) -> None:
    splits = parse_spec(f"dsb2018:{args.dsb}").splits()
    pool = brightfield(splits["train"])
    train = pool[: args.pairs]
    scored = pool[args.pairs :] if args.split == "val" else brightfield(splits["test"])
    write_pairs(train, work / "train")
    write_pairs(scored, work / "test")
    base = WEIGHTS / "dsb2018-unet"
    tuned = finetune(base, work, args.output / "tuned", args.budget, *args.flags)
    after = dice_of(tuned, work, args.output / "eval")
    ids = ", ".join(sample.id[:8] for sample in train)
    print(
        f"{len(train)} brightfield training pairs ({ids}), {len(scored)} brightfield "
        f"{args.split} images, fine-tuned for {args.budget}\n"
    )
    print(f"| model | brightfield {args.split} Dice (mean per image) |\n| --- | ---: |")
    if args.zero_shot:
        print(f"| dsb2018-unet (bundled) | {dice_of(base, work, args.output / 'eval-base'):.3f} |")
    print(f"| + {len(train)} brightfield images, {args.budget} | {after:.3f} |")


def drive_case(args: argparse.Namespace, work: Path) -> None:
    splits = parse_spec(f"drive:{args.drive}").splits()
    write_pairs(splits["train"][: args.pairs], work / "train", FINER)
    write_pairs(splits["test"], work / "test", FINER)
    base = WEIGHTS / "drive-unet"
    planned = finetune(base, work, args.output / "planned", args.budget, *args.flags)
    kept = finetune(
        base, work, args.output / "base-scale", args.budget, "--scale", "1", *args.flags
    )
    rows = {
        "drive-unet (bundled), zero-shot": dice_of(base, work, args.output / "eval-base"),
        f"+ {args.pairs} images, at the base's scale (1)": dice_of(
            kept, work, args.output / "eval-base-scale"
        ),
        f"+ {args.pairs} images, at the planned scale": dice_of(
            planned, work, args.output / "eval-planned"
        ),
    }
    print(f"DRIVE at {FINER}x: {args.pairs} training pairs, the 20 test images, {args.budget}\n")
    print("| model | test Dice (mean per image) |\n| --- | ---: |")
    for name, dice in rows.items():
        print(f"| {name} | {dice:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    case = parser.add_mutually_exclusive_group(required=True)
    case.add_argument("--dsb", type=Path, help="the DSB 2018 folder: the brightfield case")
    case.add_argument("--drive", type=Path, help="the DRIVE folder: the 1.7x case")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--budget", default="90s")
    parser.add_argument(
        "--zero-shot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the bundled model too (--no-zero-shot: repeats skip it)",
    )
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--output", type=Path, default=Path("runs/bench-finetune"))
    args, flags = parser.parse_known_args()
    args.flags = flags  # the flags this script does not know go to each fine-tune
    work = Path(tempfile.mkdtemp(prefix="finetune-"))
    try:
        (dsb_case if args.dsb else drive_case)(args, work)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
