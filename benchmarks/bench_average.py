"""The weight average (`--ema`) against the weights it averages, from one run: paired, the same
steps, the same crops in the same order, so only the average differs.

    python -m trainers.train --data dsb2018:../shared/data/DSB2018-nuclei --ema 0.999 \\
        --output runs/dsb-ema
    python benchmarks/bench_average.py runs/dsb-ema

Scored on the run's test split (`trainers.evaluate`, the run's config and threshold): the
trained weights at the last checkpoint, the average at that same step, and the weights the run
kept (the average at its best validation). Prints a Markdown table of pooled Dice (the test F1)
and mean Dice per image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_finetune import summary_on_test
from trainers.fit.checkpoint import LATEST, STATE
from zoo._hub import WEIGHTS_NAME


def weights_folder(run: Path, tensors: dict[str, torch.Tensor] | None, folder: Path) -> Path:
    """A folder `trainers.evaluate` reads: the run's config.json and the last checkpoint's
    trained weights, with `tensors` (the average's, where given) in place of theirs."""
    folder.mkdir(parents=True)
    shutil.copy(run / "config.json", folder / "config.json")
    weights = load_file(last_checkpoint(run) / WEIGHTS_NAME)
    weights.update({name: value.contiguous() for name, value in (tensors or {}).items()})
    save_file(weights, str(folder / WEIGHTS_NAME))
    return folder


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / LATEST).read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder trained with --ema")
    args = parser.parse_args()
    if not (args.run / "train_config.json").is_file():
        raise SystemExit(f"{args.run} is not a run folder: it has no train_config.json")
    settings = json.loads((args.run / "train_config.json").read_text())
    if not settings.get("ema"):
        raise SystemExit(f"{args.run} was trained without --ema: it has no average to compare")
    state = torch.load(last_checkpoint(args.run) / STATE, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = {
            f"trained weights, step {state['step']}": weights_folder(args.run, None, work / "raw"),
            f"average (--ema {settings['ema']:g}), step {state['step']}": weights_folder(
                args.run, state["average"]["weights"], work / "average"
            ),
            f"kept: the average at its best validation (step {state['best_step']})": args.run,
        }
        print(f"{settings['data']}: {state['step']} steps\n")
        print("| weights | test pooled Dice | per image |\n| --- | ---: | ---: |")
        for index, (name, weights) in enumerate(rows.items()):
            summary = summary_on_test(weights, settings["data"], work / f"eval-{index}")
            pooled, per_image = summary["pooled"]["dice"], summary["metrics"]["dice"]["mean"]
            print(f"| {name} | {pooled:.4f} | {per_image:.4f} |")


if __name__ == "__main__":
    main()
