"""The plain peer for issue 12's comparison: a segmentation_models_pytorch U-Net trained for a
fixed wall-clock budget, evaluated on the test split with bioseg's own metrics.

    python benchmarks/peer_smp.py --data drive:../shared/data/DRIVE --minutes 20

The recipe is deliberately the common default, not tuned: a resnet18 encoder from scratch,
Dice + BCE, random 256x256 crops with horizontal and vertical flips, batch 8, Adam at 1e-3, no
schedule, threshold 0.5. It trains on the same training images as `trainers.train` (the data
set's val split, or the same seeded 20% held out, is left unused). Needs
`pip install -r benchmarks/requirements.txt`; bioseg itself does not depend on smp.

With `--objects` (issue 24's plain alternative to Cellpose) it learns bioseg's object target
(background, interior, boundary, contact: `trainers.data.targets`) with soft Dice +
cross-entropy over the target's classes, its objects split by the same watershed
(`trainers.scores.objects.split_objects`), and is scored by the object metrics:

    python benchmarks/peer_smp.py --data dsb2018:../shared/data/DSB2018-nuclei --objects
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainers.data import SegmentationDataset, eval_transform, parse_spec, train_val_split
from trainers.data.readers import read_objects
from trainers.evaluate import summarize_objects
from trainers.fit.settings import TrainConfig
from trainers.scores import metrics
from trainers.scores.objects import object_scores, split_objects

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CROP, BATCH = 256, 8


def load(samples: list, source) -> list[dict[str, Tensor]]:
    """Every sample decoded and normalised once, at full size."""
    dataset = SegmentationDataset(
        samples, eval_transform(**IMAGENET), mask_mode=source.mask_mode, palette=source.palette
    )
    return [dataset[index] for index in range(len(dataset))]


def random_batch(items: list[dict[str, Tensor]], rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """BATCH random 256x256 crops (images smaller than that are padded), flipped at random."""
    images, masks = [], []
    for index in rng.integers(0, len(items), BATCH):
        image, mask = items[index]["image"], items[index]["mask"].float()[None]
        pad_h, pad_w = max(0, CROP - image.shape[1]), max(0, CROP - image.shape[2])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            mask = F.pad(mask, (0, pad_w, 0, pad_h))
        top = int(rng.integers(0, image.shape[1] - CROP + 1))
        left = int(rng.integers(0, image.shape[2] - CROP + 1))
        image = image[:, top : top + CROP, left : left + CROP]
        mask = mask[:, top : top + CROP, left : left + CROP]
        for axis in (1, 2):
            if rng.random() < 0.5:
                image, mask = image.flip(axis), mask.flip(axis)
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


def dice_bce(logits: Tensor, target: Tensor) -> Tensor:
    probabilities = torch.sigmoid(logits)
    overlap = (probabilities * target).sum((1, 2, 3))
    total = probabilities.sum((1, 2, 3)) + target.sum((1, 2, 3))
    dice = 1 - (2 * overlap + 1) / (total + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def dice_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice over the classes plus cross-entropy, for the object target's class ids."""
    classes = target[:, 0].long()
    probabilities = logits.softmax(1)
    one_hot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).float()
    overlap = (probabilities * one_hot).sum((2, 3))
    total = probabilities.sum((2, 3)) + one_hot.sum((2, 3))
    dice = 1 - (2 * overlap + 1) / (total + 1)
    return dice.mean() + F.cross_entropy(logits, classes)


@torch.no_grad()
def predict(model: torch.nn.Module, image: Tensor) -> np.ndarray:
    """Probabilities K x H x W for a whole image, padded to a multiple of 32 and cropped back:
    sigmoid for one class, softmax for the object target's classes."""
    height, width = image.shape[1:]
    padded = F.pad(image[None], (0, -width % 32, 0, -height % 32), mode="reflect")
    logits = model(padded)[0, :, :height, :width]
    return (logits.sigmoid() if logits.shape[0] == 1 else logits.softmax(0)).numpy()


def object_summary(model: torch.nn.Module, samples: list, source) -> dict:
    """The object scores of the test split: the watershed's objects against each image's."""
    rows = []
    for sample, item in zip(samples, load(samples, source), strict=True):
        found = split_objects(predict(model, item["image"]))
        rows.append(object_scores(found, read_objects(sample.masks)))
    return summarize_objects(rows)


def main() -> None:
    import segmentation_models_pytorch as smp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="KIND:PATH, as for trainers.train")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--output", type=Path, help="where summary.json goes (default: print)")
    parser.add_argument("--objects", action="store_true", help="the object target (see above)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    source = parse_spec(args.data)
    source = source.for_objects() if args.objects else source
    splits = source.splits()
    train = splits["train"]
    if "val" not in splits:  # the same training images as trainers.train uses
        train, _ = train_val_split(train, TrainConfig.val_fraction, seed=TrainConfig.seed)
    items = load(train, source)
    classes = len(source.class_names) if args.objects else 1
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=classes)
    loss_of = dice_ce if args.objects else dice_bce
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started, steps = time.monotonic(), 0
    while time.monotonic() - started < args.minutes * 60:
        images, masks = random_batch(items, rng)
        loss = loss_of(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 50 == 0:
            print(f"step {steps} loss {loss.item():.4f} {time.monotonic() - started:.0f} s")
    model.eval()
    if args.objects:
        summary = {"peer": "smp.Unet(resnet18, from scratch), the object target, Dice+CE",
                   "data": args.data, "minutes": args.minutes, "steps": steps,
                   "objects": object_summary(model, splits["test"], source)}  # fmt: skip
        return write_summary(summary, args.output)
    rows, pooled_pred, pooled_target = [], [], []
    for item in load(splits["test"], source):
        pred = predict(model, item["image"])[0] > 0.5
        target, roi = item["mask"].numpy() == 1, item["roi"].numpy()
        rows.append(metrics.binary_metrics(pred, target, roi=roi))
        pooled_pred.append(pred[roi])
        pooled_target.append(target[roi])
    pooled = metrics.confusion(
        np.concatenate(pooled_pred)[None], np.concatenate(pooled_target)[None]
    )
    summary = {
        "peer": "smp.Unet(resnet18, from scratch), Dice+BCE, 256 crops, batch 8, Adam 1e-3",
        "data": args.data,
        "minutes": args.minutes,
        "steps": steps,
        "test_images": len(rows),
        "metrics": metrics.summarize(rows),
        "pooled_dice": metrics.dice(pooled),
    }
    write_summary(summary, args.output)


def write_summary(summary: dict, output: Path | None) -> None:
    text = json.dumps(summary, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
