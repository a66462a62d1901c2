"""Evaluate trained weights on a data set split: per-image CSV, summary JSON, PR curve, grid.

    python -m trainers.evaluate --weights runs/drive --data drive:../shared/data/DRIVE
    python -m trainers.evaluate --weights OWNER/NAME --data folder:my_data --split val

Writes into --output (default: RUN_DIR/eval, or eval-<name> for a Hub id):
per_image.csv, summary.json (mean and std of each metric, with the number of excluded cases),
pr_curve.png (binary models: precision-recall curve with average precision and the best-F1
threshold) and grid.png (image | target | prediction | error map). Where the data set labels
each object (DSB 2018, folder label images), objects.csv holds the object scores of each image
(`trainers.scores.objects`: DSB score, AP50, F1, PQ, AJI, counts) and summary.json their means;
where the foreground parts regions (ISBI 2012's membranes), regions.csv holds V_Rand and V_Info. As
for the pixel metrics, each of these means says how many images it used and how many it
excluded (an image with no object on either side, where the ratios are undefined).
A model of the object target is scored on pixels by its foreground
(`trainers.scores.objects.foreground`).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

import zoo
from trainers.cli import exit_on_user_error, threshold_argument
from trainers.data import SegmentationDataset, eval_transform, parse_spec, read_image
from trainers.data.readers import read_objects
from trainers.fit.checkpoint import write_json
from trainers.scores import metrics, objects
from trainers.scores.plots import error_grid, pr_curve_plot
from trainers.scores.scoring import binarize, class_map, predict_probabilities

METRICS = ("dice", "iou", "precision", "recall", "specificity", "hd", "hd95")


def default_output(weights: str) -> Path:
    folder = Path(weights)
    return folder / "eval" if folder.is_dir() else Path(f"eval-{weights.replace('/', '-')}")


def evaluate(
    weights: str,
    data: str,
    *,
    split: str = "test",
    output: Path | None = None,
    threshold: float | None = None,
    grid_images: int = 4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate `weights` (a run folder or Hub id) on `split` of `data`, on the GPU when there is
    one, large images tiled as the demo tiles them; writes the files and returns the summary."""
    output = Path(output) if output else default_output(weights)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ValueError(f"{output} already holds files; pass --overwrite or another --output")
    model = zoo.from_pretrained(weights)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    config = model.pretrained_config
    threshold = threshold if threshold is not None else config.get("threshold", 0.5)
    source = parse_spec(data)
    splits = source.splits()
    if split not in splits:
        raise ValueError(f"{data} has no split '{split}'; it has: {', '.join(splits)}")
    binary = check_classes(model, source, weights, data)
    dataset = SegmentationDataset(
        splits[split],
        eval_transform(),
        in_channels=model.in_channels,
        mask_mode=source.mask_mode,
        palette=source.palette,
    )
    rows, scores, targets, shown, extra = score_split(
        model, dataset, threshold, grid_images, labelled=source.objects
    )
    output.mkdir(parents=True, exist_ok=True)
    write_rows(output / "per_image.csv", rows)
    summary: dict[str, Any] = {
        "weights": weights,
        "data": data,
        "split": split,
        "n_images": len(dataset),
        "threshold": threshold,
        "metrics": metrics.summarize(rows_without_ids(rows)),  # over images (and classes)
    }
    for name, found in extra.items():  # "objects", "regions": a CSV each, their means
        write_rows(output / f"{name}.csv", found)
        summary[name] = summarize_objects(found) if name == "objects" else mean_scores(found)
    if binary:
        summary.update(pooled_figures(np.concatenate(scores), np.concatenate(targets), threshold))
        if "curve" in summary:
            pr_curve_plot(
                summary.pop("curve"), output / "pr_curve.png", title=f"{config['model']} on {split}"
            )
    else:  # each foreground class on its own, beside the mean over all of them
        summary["per_class"] = per_class(rows, source.class_names, model.num_classes)
    error_grid(shown, output / "grid.png", binary=binary)
    write_json(output / "summary.json", json_safe(summary))
    return summary


def per_class(rows: list[dict], names: list[str], num_classes: int) -> dict[str, dict]:
    """Each foreground class's summary over the images, by its name."""
    return {
        names[c]: metrics.summarize(rows_without_ids([row for row in rows if row["class"] == c]))
        for c in range(1, num_classes)
    }


def check_classes(model: zoo.SegmentationModel, source: Any, weights: str, data: str) -> bool:
    """Whether the model is scored as binary (one channel, or the object target by its
    foreground); a ValueError when its classes do not fit the data set's."""
    binary = model.num_classes == 1 or bool(model.pretrained_config.get("objects"))
    if (len(source.class_names) == 2) != binary:
        raise ValueError(
            f"{weights} predicts {model.num_classes} class channel(s), but {data} has the "
            f"classes {', '.join(source.class_names)}"
        )
    return binary


def score_split(
    model: zoo.SegmentationModel,
    dataset: SegmentationDataset,
    threshold: float,
    shown: int,
    *,
    labelled: bool = False,
) -> tuple[list[dict[str, Any]], list[np.ndarray], list[np.ndarray], list[tuple], dict]:
    """Per-image (and per-class) metric rows; for a binary model the scores and targets inside
    the regions of interest; the first `shown` images with their target, prediction and roi;
    the object rows of each image where its masks label each object (`labelled`), the region
    rows where its foreground parts regions (`object_rows`)."""
    rows, scores, targets, grid = [], [], [], []
    extra: dict[str, list[dict[str, Any]]] = {}
    object_target = bool(model.pretrained_config.get("objects"))
    for index in range(len(dataset)):
        item, sample = dataset[index], dataset.samples[index]
        probabilities = predict_probabilities(model, item["image"])
        found = object_rows(probabilities, threshold, item, sample, object_target, labelled)
        for name, row in found:
            extra.setdefault(name, []).append(row)
        target, roi = item["mask"].numpy(), item["roi"].numpy()
        if object_target:  # scored on pixels by its foreground, 1 - p_background its score
            pred = objects.foreground(probabilities).view(np.uint8)
            probabilities = 1 - probabilities[:1]
        else:
            pred = class_map(probabilities, threshold)
        if probabilities.shape[0] == 1:
            rows.append(
                {"id": item["id"], **metrics.binary_metrics(pred == 1, target == 1, roi=roi)}
            )
            scores.append(probabilities[0][roi])
            targets.append(target[roi] == 1)
        else:
            per_class = metrics.multiclass_metrics(pred, target, model.num_classes, roi=roi)
            rows += [{"id": item["id"], "class": c, **row} for c, row in per_class.items()]
        if len(grid) < shown:
            grid.append((read_image(sample.image), target, pred, roi, item["id"]))
    return rows, scores, targets, grid, extra


def object_rows(
    probabilities: np.ndarray,
    threshold: float,
    item: dict,
    sample: Any,
    object_target: bool,
    labelled: bool,
) -> list[tuple[str, dict[str, Any]]]:
    """The image's object scores where its masks label each object (`labelled`: a file per
    nucleus, or a label image), and its region scores (V_Rand, V_Info) where its foreground
    parts regions (`invert`: ISBI 2012's membranes between cells)."""
    found = []
    if labelled:
        predicted = objects.objects_of(probabilities, threshold, object_target=object_target)
        found.append(
            (
                "objects",
                {"id": item["id"], **objects.object_scores(predicted, read_objects(sample.masks))},
            )
        )
    if sample.invert:
        pred = class_map(probabilities, threshold)
        regions = objects.rand_and_info(
            objects.components(pred == 0), objects.components(item["mask"].numpy() == 0)
        )
        found.append(("regions", {"id": item["id"], **regions}))
    return found


def pooled_figures(scores: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, Any]:
    """All pixels of the split at once, as DRIVE results are reported: Dice, IoU, precision and
    recall at `threshold` (and at 0.5 beside a tuned one), AP, best F1, ROC AUC and the curve."""
    pooled = metrics.confusion(binarize(scores, threshold)[None], targets[None])  # 1 x N
    found: dict[str, Any] = {
        "pooled": {
            name: getattr(metrics, name)(pooled) for name in ("dice", "iou", "precision", "recall")
        }
    }
    if threshold != 0.5:  # a tuned threshold's figures beside those at the usual one
        at_half = metrics.confusion(binarize(scores, 0.5)[None], targets[None])
        found["pooled_at_0.5"] = {"dice": metrics.dice(at_half), "iou": metrics.iou(at_half)}
    try:  # undefined when the split has no foreground (or no background) pixels
        curve = metrics.precision_recall_curve(scores, targets)
        found.update(
            average_precision=curve.average_precision,
            best_f1=curve.best_f1,
            best_threshold=curve.best_threshold,
            auc=metrics.roc_auc(scores, targets),
            curve=curve,
        )
    except ValueError as error:
        found["curves_undefined"] = str(error)
    return found


def summarize_objects(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The object scores over images (`mean_scores`: an image with no object in target or
    prediction left out of each ratio's mean and counted as excluded), the objects counted, and
    the median relative count error."""
    true = np.array([row["true_objects"] for row in rows], float)
    found = np.array([row["objects"] for row in rows], float)
    relative = np.abs(found - true)[true > 0] / true[true > 0]
    return {
        **mean_scores(rows),
        "objects_total": int(found.sum()),
        "true_objects_total": int(true.sum()),
        "median_relative_count_error": float(np.median(relative)) if relative.size else math.nan,
    }


def mean_scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each score's mean, std, n used and n excluded over the rows, as the pixel metrics are
    summarized (`metrics.summarize`): an undefined (NaN) value is left out and counted."""
    return metrics.summarize(rows_without_ids(rows))


def rows_without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in ("id", "class")} for row in rows]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def json_safe(value: Any) -> Any:
    """NaN becomes null, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def evaluate_volumes(weights: str, data: str, split: str, output: Path | None) -> dict:
    """A volume model scored on a split of a data set of volumes (`trainers.volumes.evaluate`),
    printed per class; written to `output` (default: WEIGHTS/eval-SPLIT, never over files)."""
    import zoo
    from trainers.volumes.evaluate import evaluate_cases, summary_lines
    from trainers.volumes.layouts import parse_volume_spec

    source = parse_volume_spec(data)
    if split not in source.cases:
        raise ValueError(f"{data} has no {split!r} split; it has {', '.join(source.cases)}")
    output = output or Path(weights) / f"eval-{split}"
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} already holds files; choose another --output")
    model = zoo.from_pretrained(weights)
    summary = evaluate_cases(model, source.cases[split], source.class_names, output=output)
    for line in summary_lines(summary):
        print(line)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainers.evaluate", description=__doc__)
    parser.add_argument("--weights", required=True, help="a run folder or a Hub id OWNER/NAME")
    parser.add_argument("--data", required=True, help="KIND:PATH, e.g. drive:../shared/data/DRIVE")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--threshold", type=threshold_argument, help="default: the saved one")
    parser.add_argument("--grid", type=int, default=4, help="images shown in grid.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation")
    args = parser.parse_args(argv)
    from trainers.volumes.layouts import is_volume_spec

    if is_volume_spec(args.data):
        with exit_on_user_error():
            evaluate_volumes(args.weights, args.data, args.split, args.output)
        return
    with exit_on_user_error():
        summary = evaluate(
            args.weights,
            args.data,
            split=args.split,
            output=args.output,
            threshold=args.threshold,
            grid_images=args.grid,
            overwrite=args.overwrite,
        )
    for name in METRICS:
        if name in summary["metrics"]:
            stats = summary["metrics"][name]
            print(
                f"{name:12s} {stats['mean']:.4f} ± {stats['std']:.4f} "
                f"(n={stats['n']}, excluded {stats['excluded']})"
            )
    if "auc" in summary:
        print(
            f"AP {summary['average_precision']:.4f}, AUC {summary['auc']:.4f}, "
            f"best F1 {summary['best_f1']:.4f} at {summary['best_threshold']:.3f}"
        )
    for kind in ("objects", "regions"):
        if kind in summary:
            print(f"{kind}: " + ", ".join(_shown(k, v) for k, v in summary[kind].items()))


def _shown(name: str, value: Any) -> str:
    """A summary's figure for the terminal: a mean with its exclusions, or a number."""
    if isinstance(value, dict):
        excluded = f" (excluded {value['excluded']})" if value["excluded"] else ""
        return f"{name} {value['mean']:.4f}{excluded}"
    return f"{name} {value:.4f}"


if __name__ == "__main__":
    main()
