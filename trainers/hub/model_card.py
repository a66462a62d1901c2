"""The Hub model card (README.md) of a training run folder, from what the folder holds.

Reads `config.json` (required), and when present `train_config.json`, `metrics.csv`,
`eval/summary.json`, `eval/pr_curve.png` and `eval/grid.png`. A section whose data is absent is
left out; nothing is filled in with placeholders.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

import zoo

EVAL_IMAGES = {"pr_curve.png": "PR curve", "grid.png": "grid"}
"""Images of `RUN/eval/` shown in the card (and uploaded beside it), with their alt text."""

DATASETS = {
    "drive": (
        "DRIVE (retinal vessels in colour fundus photographs)",
        "research and education, with the citation below",
        [
            'Staal J. et al., "Ridge-based vessel segmentation in color images of the retina", '
            "IEEE Transactions on Medical Imaging 23(4), 2004.",
        ],
    ),
    "isbi2012": (
        "ISBI 2012 EM segmentation challenge (neuronal membranes, Drosophila larva VNC)",
        "research and education, with the citations below",
        [
            "Cardona A. et al., PLoS Biology 8(10), 2010.",
            'Arganda-Carreras I. et al., "Crowdsourcing the creation of image segmentation '
            'algorithms for connectomics", Frontiers in Neuroanatomy, 2015.',
        ],
    ),
    "dsb2018": (
        "2018 Data Science Bowl, stage 1 train, fixed annotations (cell nuclei)",
        "CC0 (public domain), images and fixed annotations",
        [
            'Caicedo J.C. et al., "Nucleus segmentation across imaging experiments: the 2018 '
            'Data Science Bowl", Nature Methods 16, 2019.',
        ],
    ),
    "msd": (
        "a Medical Segmentation Decathlon task (the Decathlon's layout; for bioseg's bundled "
        "volume model, Task04 Hippocampus: MRI, anterior and posterior hippocampus)",
        "CC-BY-SA 4.0",
        [
            'Simpson A.L. et al., "A large annotated medical image dataset for the development '
            'and evaluation of segmentation algorithms", arXiv:1902.09063, 2019.',
            'Antonelli M. et al., "The Medical Segmentation Decathlon", Nature Communications '
            "13, 4128, 2022.",
        ],
    ),
}
"""Data sets with a known name, terms and citation, by the `dataset` key of config.json."""

NO_IMAGES = {
    "drive": "DRIVE's terms forbid copying and redistributing its images",
    "isbi2012": "the ISBI 2012 data's terms of redistribution are unclear",
}
"""Data sets whose images, and images made from them (the grid), are never published."""


def published_images(dataset: str | None) -> dict[str, str]:
    """The `EVAL_IMAGES` that may be published for a model trained on `dataset`."""
    if dataset in NO_IMAGES:
        return {name: alt for name, alt in EVAL_IMAGES.items() if name != "grid.png"}
    return EVAL_IMAGES


LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "hd": "HD (px)",
    "hd95": "HD95 (px)",
    "precision": "Precision",
    "recall": "Recall",
    "average_precision": "Average precision",
    "best_f1": "Best F1",
    "best_threshold": "Best threshold (max F1)",
    "auc": "ROC AUC",
}
OBJECT_LABELS = {
    "dsb_score": "DSB 2018 score (mean TP / (TP + FP + FN) over IoU 0.50..0.95)",
    "ap50": "AP at IoU 0.5 (TP / (TP + FP + FN))",
    "f1_50": "F1 at IoU 0.5",
    "pq": "Panoptic quality",
    "aji": "Aggregated Jaccard index",
    "median_relative_count_error": "Median relative count error",
    "objects_total": "Objects found (all images)",
    "true_objects_total": "Objects in the targets",
    "v_rand": "V_Rand (foreground-restricted Rand F-score)",
    "v_info": "V_Info (foreground-restricted information F-score)",
}
SCORES = ("average_precision", "best_f1", "auc")
"""Scores of the whole split in summary.json: shown after the per-image metrics, and listed."""
SCALARS = (*SCORES, "best_threshold")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _number(value: Any) -> str:
    """Four decimals for floats, 'n/a' for a missing or NaN value (a metric with no case left)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _mean(value: Any) -> str:
    """A summary's mean (`metrics.summarize`'s record, or a plain number) as `_number` shows it."""
    return _number(value.get("mean") if isinstance(value, dict) else value)


def _finite(text: str | None) -> bool:
    try:
        return math.isfinite(float(text or "nan"))
    except ValueError:
        return False


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [header, tuple("---" for _ in header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _volume_rows(volume: dict[str, Any]) -> list[tuple[str, str]]:
    """A volume model's rows: its modality, spacing and patch, and how intensities are set."""
    spacing = " x ".join(f"{v:g}" for v in volume["target_spacing"])
    intensities = (
        "CT: clipped to the training foreground's 0.5-99.5 percentiles, z-scored"
        if scheme["scheme"] == "ct"
        else "z-scored per volume"
        for scheme in volume["normalization"]
    )
    return [
        (
            "volumes",
            f"3D, {volume.get('modality') or 'any modality'}; resampled to "
            f"{spacing} mm (D x H x W), patches of {'x'.join(map(str, volume['patch']))}",
        ),
        ("intensities", ", ".join(intensities)),
    ]


def _model_section(config: dict[str, Any], spec: zoo.ModelSpec) -> str:
    n = config["num_classes"]
    rows = [
        ("bioseg model", f"`{config['model']}`"),
        ("architecture", spec.summary),
        ("output", f"{n} channel{'s' if n > 1 else ''}, {'softmax' if n > 1 else 'sigmoid'}"),
    ]
    if "classes" in config:
        rows.append(("classes", ", ".join(config["classes"])))
    if config.get("objects"):
        rows.append(
            (
                "objects",
                "one label per object: each interior a seed of a watershed "
                "through the foreground "
                "(`trainers.scores.objects.split_objects`)",
            )
        )
    size = config.get("input_size")
    size_text = f", trained at {size[0]} x {size[1]} pixels" if size and len(size) == 2 else ""
    rows.append(("input", f"{config['in_channels']} channels{size_text}"))
    if "mean" in config and "std" in config and "volume" not in config:
        normalization = f"pixels scaled to [0, 1], then (x - {config['mean']}) / {config['std']}"
        if config["in_channels"] == 1 and len(config["mean"]) > 1:
            normalization += " with the averages of these values (one grey channel)"
        rows.append(("normalization", normalization))
    if "threshold" in config:
        rows.append(("threshold", _number(config["threshold"])))
    if config.get("scale", 1) != 1:
        rows.append(
            (
                "resolution",
                f"run at {config['scale']:g} of the image's size by "
                "`predict` (resized, answered at the full size)",
            )
        )
    if volume := config.get("volume"):
        rows += _volume_rows(volume)
    if config["model_kwargs"]:
        options = ", ".join(f"{k}={_cell(v)}" for k, v in config["model_kwargs"].items())
        rows.append(("options", f"`{options}`"))
    if "bioseg_version" in config:
        rows.append(("bioseg version", config["bioseg_version"]))
    return "## Model\n\n" + _table(("", ""), [(k, _cell(v)) for k, v in rows])


def _usage_section(config: dict[str, Any], repo_id: str) -> str:
    if "volume" in config:
        code = [
            "import zoo  # pip install bioseg",
            "from trainers.volumes.image import read_volume, write_labels",
            "from trainers.volumes.infer import predict_volume",
            "",
            f'model = zoo.from_pretrained("{repo_id}")',
            'volume = read_volume("case.nii.gz")  # NIfTI, NRRD, MHA, or a DICOM series folder',
            "labels = predict_volume(model, volume)  # normalized and resampled as in training",
            'write_labels(labels, volume, "case_seg.nii.gz")  # in the input\'s own geometry',
        ]
        return "## How to use\n\n```python\n" + "\n".join(code) + "\n```"
    if config.get("objects"):
        mask = "labels = split_objects(probabilities[0].numpy())  # one id per object"
    elif config["num_classes"] == 1:
        mask = f"mask = probabilities[:, 0] > {config.get('threshold', 0.5)}"
    else:
        mask = "mask = probabilities.argmax(dim=1)  # class index per pixel"
    code = [
        "import torch",
        "import zoo  # pip install bioseg",
        "from trainers.data import read_image",
        *(["from trainers.scores.objects import split_objects"] if config.get("objects") else []),
        "",
        f'model = zoo.from_pretrained("{repo_id}")  # cached: later loads work offline',
        'image = read_image("my_image.png")  # H x W x C in [0, 1]: PNG, JPEG, TIFF, DICOM',
        "x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)  # 1 x C x H x W"
        + (", C = 1: zoo.match_channels(image, 1)" if config["in_channels"] == 1 else ""),
        "probabilities = model.predict(x)  # normalized and scaled as in training, at H x W",
        mask,
    ]
    return "## How to use\n\n```python\n" + "\n".join(code) + "\n```"


def _training_section(run_dir: Path, dataset: str | None, settings: dict[str, Any]) -> str | None:
    parts = []
    if dataset:
        name = DATASETS[dataset][0] if dataset in DATASETS else f"`{dataset}`"
        parts.append(f"Trained on {name}.")
    if settings:
        rows = [(f"`{key}`", _cell(value)) for key, value in settings.items()]
        parts.append(_table(("setting", "value"), rows))
    if (run_dir / "metrics.csv").is_file():
        with (run_dir / "metrics.csv").open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        scored = [row for row in rows if _finite(row.get("val_dice"))]
        if scored:
            best = max(scored, key=lambda row: float(row["val_dice"]))
            scores = ", ".join(f"{k} {v}" for k, v in best.items() if k.startswith("val_"))
            unit = "step" if "step" in best else "epoch"  # runs of older bioseg: epochs
            last = rows[-1].get(unit, "?")
            parts.append(
                f"Best validation Dice at {unit} {best.get(unit, '?')} of {last}: {scores}."
            )
    return "## Training\n\n" + "\n\n".join(parts) if parts else None


def _volume_evaluation_section(summary: dict[str, Any]) -> str:
    """The test cases' scores of a volume model (`trainers.volumes.evaluate`), per class."""
    names = ("dice", "iou", "hd95", "msd", "nsd", "volume_target_ml", "volume_pred_ml")
    header = (
        "class",
        "Dice",
        "IoU",
        "HD95 (mm)",
        "MSD (mm)",
        f"NSD at {summary['nsd_tolerance_mm']:g} mm",
        "target (mL)",
        "predicted (mL)",
    )
    rows = [
        (c, *(_number(stats[name]["mean"]) for name in names))
        for c, stats in summary["classes"].items()
    ]
    return (
        f"## Evaluation\n\nOn {summary['cases']} test cases (a seeded split by case), means over "
        f"cases: mean Dice over the classes **{_number(summary['mean_dice'])}**.\n\n"
        + _table(header, rows)
    )


def _evaluation_section(summary: dict[str, Any]) -> str:
    if "mean_dice" in summary:
        return _volume_evaluation_section(summary)
    split = summary.get("split", "evaluation")
    count = f", {summary['n_images']} images" if "n_images" in summary else ""
    parts = [f"## Evaluation\n\nOn the {split} split{count}, per image:"]
    rows = [
        (
            LABELS.get(name, name),
            f"{_number(stats.get('mean'))} ± {_number(stats.get('std'))}",
            _number(stats.get("n")),
            _number(stats.get("excluded")),
        )
        for name, stats in summary.get("metrics", {}).items()
    ]
    parts.append(_table(("metric", "mean ± std", "n", "excluded"), rows))
    if per_class := summary.get("per_class"):
        names = list(next(iter(per_class.values())))
        parts.append("Per class (mean over images):")
        parts.append(
            _table(
                ("class", *(LABELS.get(name, name) for name in names)),
                [
                    (c, *(_number(stats[name].get("mean")) for name in names))
                    for c, stats in per_class.items()
                ],
            )
        )
    scalars = [
        (f"Pooled {LABELS.get(k, k)} (all pixels)", _number(v))
        for k, v in summary.get("pooled", {}).items()
    ]
    scalars += [(LABELS[key], _number(summary[key])) for key in SCALARS if key in summary]
    if scalars:
        parts.append(_table(("over the whole split", "value"), scalars))
    for kind in ("objects", "regions"):  # trainers.scores.objects: the field's object scores
        found = summary.get(kind, {})
        rows = [(OBJECT_LABELS[k], _mean(found[k])) for k in OBJECT_LABELS if k in found]
        if rows:
            parts.append(_table((f"{kind} (mean over images, a match: IoU > 0.5)", "value"), rows))
    return "\n\n".join(parts)


def _dataset_section(dataset: str) -> str:
    name, terms, citations = DATASETS[dataset]
    lines = [f"## Data set\n\n{name}. Terms of use: {terms}.\n"]
    lines += [f"- {citation}" for citation in citations]
    return "\n".join(lines)


def run_card(run_dir: Path, repo_id: str, space_id: str | None = None) -> str:
    """README.md for the Hub repo `repo_id` of run folder `run_dir`: YAML metadata, then text;
    with `space_id`, a link to the Space that serves it."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} has no config.json; expected a training run folder (config.json, "
            "model.safetensors, train_config.json, ...) as written by trainers.train"
        )
    config = _read_json(run_dir / "config.json")
    spec = zoo.get_spec(config["model"])
    dataset = config.get("dataset")
    summary_path = run_dir / "eval" / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else None
    settings_path = run_dir / "train_config.json"
    settings = _read_json(settings_path) if settings_path.is_file() else {}
    metrics = [*summary.get("metrics", {}), *(k for k in SCORES if k in summary)] if summary else []
    metadata = ModelCardData(
        library_name="bioseg",
        license=settings.get("license") or None,  # trainers.train --license
        tags=["image-segmentation", "medical-imaging", "bioseg", spec.family],
        datasets=[dataset] if dataset in DATASETS else None,
        metrics=metrics or None,
        pipeline_tag="image-segmentation",
    )
    sections = [
        f"---\n{metadata.to_yaml()}\n---",
        f"# {repo_id}\n\nA bioseg segmentation model: {spec.summary}.",
        f"**Try it in the browser:** [{space_id}](https://huggingface.co/spaces/{space_id})"
        if space_id
        else None,
        _model_section(config, spec),
        _usage_section(config, repo_id),
        _training_section(run_dir, dataset, settings),
        _evaluation_section(summary) if summary else None,
        *(
            f"![{alt}]({name})"
            for name, alt in published_images(dataset).items()
            if (run_dir / "eval" / name).is_file()
        ),
        (
            f"The grid of test images and predictions is not published: {NO_IMAGES[dataset]}."
            if dataset in NO_IMAGES
            else None
        ),
        _dataset_section(dataset) if dataset in DATASETS else None,
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
