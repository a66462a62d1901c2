"""The Cellpose peer of bioseg's object model: Cellpose 3's CPnet (a residual U-Net, about 6.6M
parameters) trained from scratch, no pretrained weights, on the DSB 2018 training split for the
CPU minutes bioseg's model had, then scored on the test split by bioseg's object metrics.

    python -m venv --system-site-packages /tmp/cpenv && /tmp/cpenv/bin/pip install "cellpose<4"
    /tmp/cpenv/bin/python benchmarks/peer_cellpose.py --data ../shared/data/DSB2018-nuclei \\
        --minutes 20 --output runs/peer-cellpose

Cellpose's own training entry point (`cellpose.train.train_seg`, its defaults: AdamW at 0.005,
weight decay 1e-5, batch 8, 224x224 crops, images rescaled to a nucleus diameter of 17 px as
its nuclei model) on `models.CellposeModel(pretrained_model=False, model_type=None)`. Cellpose
counts its training in epochs (passes over the images), not time: one epoch is timed first,
then a fresh network trains for as many epochs as the minutes left after its flows (the
targets Cellpose computes from the labels) hold. Cellpose 4's default network (Cellpose-SAM, a
ViT-L) is far too large to train from scratch on 2 cores, so this is Cellpose 3.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellpose import dynamics, models, train, version

from trainers.data import parse_spec
from trainers.data.readers import read_image, read_objects
from trainers.evaluate import summarize_objects, write_rows
from trainers.scores.objects import object_scores

DIAMETER = 17.0  # Cellpose's nuclei models' mean diameter


def load(samples) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    images = [read_image(s.image) for s in samples]
    return images, [read_objects(s.masks) for s in samples], [s.id for s in samples]


def fresh_model() -> models.CellposeModel:
    return models.CellposeModel(
        gpu=False, pretrained_model=False, model_type=None, diam_mean=DIAMETER
    )


def fit(images, flows, epochs: int, folder: Path) -> Path:
    model = fresh_model()
    folder.mkdir(parents=True, exist_ok=True)
    path, _, _ = train.train_seg(
        model.net, train_data=images, train_labels=flows, channels=[0, 0], channel_axis=-1,
        n_epochs=epochs, save_path=folder, save_every=10**6, model_name="peer",
        min_train_masks=1,
    )  # fmt: skip
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 folder")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=Path("runs/peer-cellpose"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    splits = parse_spec(f"dsb2018:{args.data}").splits()
    start = time.perf_counter()
    images, labels, _ = load(splits["train"])
    flows = dynamics.labels_to_flows(labels, device=torch.device("cpu"))
    prepared = time.perf_counter() - start
    timed = time.perf_counter()
    fit(images, flows, 1, args.output / "timing")
    epoch = time.perf_counter() - timed
    epochs = max(1, int((args.minutes * 60 - prepared) / epoch))
    print(f"cellpose {version}: data and flows {prepared:.0f} s, an epoch {epoch:.0f} s: "
          f"{epochs} epochs in {args.minutes:g} min")  # fmt: skip
    trained = time.perf_counter()
    weights = fit(images, flows, epochs, args.output)
    seconds = prepared + time.perf_counter() - trained
    model = models.CellposeModel(gpu=False, pretrained_model=str(weights))
    test_images, test_labels, ids = load(splits["test"])
    rows = []
    for image, truth, name in zip(test_images, test_labels, ids, strict=True):
        masks = model.eval(image, channels=[0, 0], channel_axis=-1, diameter=None)[0]
        rows.append({"id": name, **object_scores(masks.astype(np.int32), truth)})
    write_rows(args.output / "objects.csv", rows)
    summary = {
        "cellpose": version, "epochs": epochs, "epoch_seconds": epoch,
        "training_seconds": seconds, "objects": summarize_objects(rows),
    }  # fmt: skip
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["objects"], indent=2))


if __name__ == "__main__":
    main()
