"""An object model's DSB score and AP50 on DSB 2018 by kind of image (fluorescence, histology,
brightfield: `benchmarks/pick_examples.kind_of`), on the test split or on the validation images
training held out (the same seeded 20 % of the training split), so that choices are made on
validation, never on test:

    python benchmarks/objects_by_kind.py --weights weights/dsb2018-objects \\
        --data ../shared/data/DSB2018-nuclei --split val --min-area 20 40

Each `--min-area` is the size under which `trainers.scores.objects.split_objects` drops a piece; the
probabilities are computed once and scored for each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo
from benchmarks.pick_examples import KINDS, kind_of
from trainers.cli import exit_on_user_error
from trainers.data.layouts import parse_spec, train_val_split
from trainers.data.readers import read_image, read_objects
from trainers.fit.settings import TrainConfig
from trainers.scores.objects import MIN_AREA, object_scores, split_objects
from trainers.scores.scoring import predict_probabilities


def samples_of(data: Path, split: str) -> list:
    """The test split, or the validation images a training run holds out of the training split."""
    splits = parse_spec(f"dsb2018:{data}").splits()
    if split == "test":
        return splits["test"]
    return train_val_split(splits["train"], TrainConfig.val_fraction, seed=TrainConfig.seed)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="an object model (run folder or Hub id)")
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 folder")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--min-area", type=int, nargs="+", default=[MIN_AREA])
    args = parser.parse_args()
    model = zoo.from_pretrained(args.weights).eval()
    scores: dict[int, dict[str, list[tuple[float, float]]]] = {a: {} for a in args.min_area}
    for sample in samples_of(args.data, args.split):
        image = read_image(sample.image)
        kind = kind_of(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)
        with torch.no_grad():
            probabilities = predict_probabilities(model, torch.from_numpy(image).permute(2, 0, 1))
        truth = read_objects(sample.masks)
        for area in args.min_area:
            found = object_scores(split_objects(probabilities, min_area=area), truth)
            for key in (kind, "all"):
                scores[area].setdefault(key, []).append((found["dsb_score"], found["ap50"]))
    for area, by_kind in scores.items():
        for key in (*KINDS, "all"):
            if key in by_kind:
                dsb, ap50 = np.nanmean(by_kind[key], axis=0)
                print(f"min area {area}: {key} ({len(by_kind[key])} images): DSB score "
                      f"{dsb:.3f}, AP50 {ap50:.3f}")  # fmt: skip


if __name__ == "__main__":
    with exit_on_user_error():
        main()
