"""A volume model scored on a split of cases, in each case's own grid and spacing.

    summary = evaluate_cases(model, cases, class_names, output=run_dir / "eval")

Writes `cases.csv` (a row per case and class: Dice, IoU, HD95, mean and normalized surface
distance in mm, target and predicted volumes in mL and their difference), `summary.json` (per
class means with the cases they leave out counted, `metrics.summarize`'s rules; and the mean
Dice over the classes) and each predicted label volume in `labels/CASE.nii.gz`, in its image's
geometry.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zoo
from trainers.fit.checkpoint import write_json
from trainers.scores import metrics
from trainers.scores.surface import NSD_TOLERANCE_MM, volume_scores
from trainers.volumes.cases import read_case
from trainers.volumes.image import write_labels
from trainers.volumes.infer import VolumeRecipe, predict_volume
from trainers.volumes.layouts import Case

SCORES = (
    "dice",
    "iou",
    "hd95",
    "msd",
    "nsd",
    "volume_target_ml",
    "volume_pred_ml",
    "volume_difference_ml",
)


def evaluate_cases(
    model: zoo.SegmentationModel,
    cases: Sequence[Case],
    class_names: Sequence[str],
    *,
    output: Path,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Score `model` on `cases` (each with labels); the summary, also written to `output`."""
    recipe = VolumeRecipe.of(model)
    rows: list[dict[str, Any]] = []
    for case in cases:
        image, label = read_case(case)
        predicted = predict_volume(model, image, recipe, precision=precision)
        write_labels(predicted, image, output / "labels" / f"{case.id}.nii.gz")
        scores = volume_scores(
            predicted, label.array, spacing=image.spacing, num_classes=len(class_names)
        )
        rows += [{"case": case.id, "class": class_names[c], **row} for c, row in scores.items()]
    _write_rows(output / "cases.csv", rows)
    per_class = {
        name: metrics.summarize(
            [
                {k: v for k, v in row.items() if k not in ("case", "class")}
                for row in rows
                if row["class"] == name
            ]
        )
        for name in class_names[1:]
    }
    dices = [per_class[name]["dice"]["mean"] for name in class_names[1:]]
    summary = {
        "cases": len(cases),
        "mean_dice": math.fsum(dices) / len(dices),
        "nsd_tolerance_mm": NSD_TOLERANCE_MM,
        "classes": per_class,
    }
    write_json(output / "summary.json", summary)
    return summary


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "class", *SCORES])
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _formatted(row[key]) for key in writer.fieldnames})


def _formatted(value: object) -> object:
    return f"{value:.4f}" if isinstance(value, float) else value


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as lines for the console and the model card."""
    lines = [f"mean Dice over the classes {summary['mean_dice']:.4f} ({summary['cases']} cases)"]
    for name, scores in summary["classes"].items():
        lines.append(
            f"{name}: Dice {scores['dice']['mean']:.4f}, IoU {scores['iou']['mean']:.4f}, "
            f"HD95 {scores['hd95']['mean']:.2f} mm, MSD {scores['msd']['mean']:.2f} mm, "
            f"NSD@{summary['nsd_tolerance_mm']:g}mm {scores['nsd']['mean']:.3f}, "
            f"volume {scores['volume_target_ml']['mean']:.2f} mL (predicted "
            f"{scores['volume_pred_ml']['mean']:.2f}); left out: Dice "
            f"{scores['dice']['excluded']}, HD95 {scores['hd95']['excluded']}"
        )
    return lines
