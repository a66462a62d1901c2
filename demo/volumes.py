"""The Volumes tab's handlers: a CT or MRI volume (NIfTI, NRRD, MHA, or a zip of a DICOM series)
and its optional target read on the server by the trainers' readers, segmented by a volume
model, scored as a radiologist reads it, and shown slice by slice.

    volumes = Volumes(settings)                          # the volume models, none loaded yet
    _, first, last = volumes.run(choice, "case.nii.gz", "case_seg.nii.gz", "", "axial")  # once
    shown = first[0]                                     # the volume, its prediction and target
    views = render(shown, "coronal", 20, "bone")         # a slice redrawn: no model run

What a visitor uploads is read with the page's voxel limit checked from the header before
anything is decoded; the label volume (`.nii.gz` in the input's own geometry) and the table
(CSV) are written in a folder of this answer's own, deleted an hour on; no DICOM header value
(a patient's name or id) is shown or used in a name.
"""

from __future__ import annotations

import csv
import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

import zoo
from demo.meshes import write_glb
from demo.overlays import overlay
from demo.settings import Settings
from demo.views import answer_folder, write_pngs
from trainers.data.errors import DataError
from trainers.scores.plots import FN, FP, TP
from trainers.scores.surface import NSD_TOLERANCE_MM, class_volumes_ml, volume_scores
from trainers.volumes.image import Volume, read_label_volume, read_volume, volume_stem, write_labels
from trainers.volumes.infer import VolumeRecipe, predict_volume

MAX_VOXELS = 40_000_000  # a visitor's volume: 512 x 512 x 152, about 1.6 GB at its peak
AXES = ("axial", "coronal", "sagittal")  # across D, H and W of the canonical (LPS) array
WINDOWS = {  # CT presets: (centre, width) in Hounsfield units
    "soft tissue": (40, 400),
    "lung": (-600, 1500),
    "bone": (400, 1800),
    "brain": (40, 80),
}
AUTO = "auto (1st-99th percentile)"
DISPLAY = 320  # pixels of a view's longer side
TABLE = [
    "class",
    "Dice",
    "IoU",
    "HD95 (mm)",
    "MSD (mm)",
    f"NSD@{NSD_TOLERANCE_MM:g}mm",
    "target (mL)",
    "prediction (mL)",
]


@dataclass(frozen=True)
class Segmented:
    """What the views are drawn from: the first channel as read (HU for CT), its spacing, the
    prediction and the target (D x H x W, canonical), the class names."""

    image: np.ndarray
    spacing: tuple[float, float, float]
    prediction: np.ndarray
    target: np.ndarray | None
    classes: list[str]
    modality: str


def volume_models(settings: Settings) -> dict[str, str]:
    """Label -> folder of each bundled or local volume model (its config holds "volume")."""
    found = {}
    for kind, root in (("bundled", settings.bundled), ("run", settings.runs)):
        for weights in sorted(root.glob("*/model.safetensors")):
            try:
                config = json.loads((weights.parent / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if "volume" in config:
                found[f"{weights.parent.name} ({kind})"] = str(weights.parent)
    return found


def volume_examples(folder: Path, choices: dict[str, str]) -> list[list]:
    """Each bundled `NAME.nii.gz` with its `NAME_seg.nii.gz` under `folder`, for the first volume
    model (none without one), as the tab's inputs take them: [model, volume, target, series,
    axis]."""
    if not choices:
        return []
    first = next(iter(choices))
    rows = []
    for target in sorted(folder.glob("**/*_seg.nii.gz")):
        image = target.with_name(target.name.removesuffix("_seg.nii.gz") + ".nii.gz")
        if image.is_file():
            rows.append([first, str(image), str(target), "", "axial"])
    return rows


class Volumes:
    """The volume models of the page, each loaded once, and the tab's two handlers."""

    def __init__(self, settings: Settings) -> None:
        self.choices = volume_models(settings)
        self.examples = volume_examples(settings.examples, self.choices)
        self._lock = threading.Lock()  # one volume predicted at a time: memory stays bounded

    def card(self, choice: str | None) -> str:
        """What a volume model is: its data set and spacing, its test figures per class (from
        the summary.json beside it), and what it is not for."""
        if choice not in self.choices:
            return ""
        folder = Path(self.choices[choice])
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        volume = config["volume"]
        spacing = " x ".join(f"{v:g}" for v in volume["target_spacing"])
        lines = [
            f"**{choice}**: {config['model']}, {volume.get('modality') or 'any modality'} at "
            f"{spacing} mm; classes {', '.join(config.get('classes', [])[1:])}."
        ]
        for path in (folder / "summary.json", folder / "eval" / "summary.json"):
            if path.is_file():
                summary = json.loads(path.read_text(encoding="utf-8"))
                dice = ", ".join(
                    f"{name} {scores['dice']['mean']:.3f}"
                    for name, scores in summary["classes"].items()
                )
                lines.append(f"Test ({summary['cases']} cases): mean Dice {dice}.")
                break
        lines.append(f"Not for: {config.get('limitations') or 'volumes unlike its training data.'}")
        return "  \n".join(lines)

    def offers(self, choice: str | None) -> bool:
        """Whether `choice` names one of the volume models (by its label or its folder's name)."""
        return self._location(choice) is not None

    @functools.lru_cache(maxsize=2)  # noqa: B019 (the page's one instance lives as long as it)
    def model(self, choice: str) -> zoo.SegmentationModel:
        location = self._location(choice)
        if location is None:
            raise gr.Error(f"{choice!r} is not one of the volume models: {', '.join(self.choices)}")
        return zoo.from_pretrained(location)

    def recipe(self, choice: str) -> VolumeRecipe:
        """How the model `choice` reads a volume: its modality, spacing, patch, intensities."""
        return VolumeRecipe.of(self.model(choice))

    def _location(self, choice: str | None) -> str | None:
        if choice in self.choices:
            return self.choices[choice]
        by_name = {Path(folder).name: folder for folder in self.choices.values()}
        return by_name.get(choice or "")

    def results(self, shown: Segmented, volume: Volume, name: str) -> tuple:
        """What follows the slices: the table rows, the label volume and CSV files, and the
        surfaces of the prediction and of the target (`.glb`; None where there is none)."""
        folder = answer_folder("volume")
        label_file = str(write_labels(shown.prediction, volume, folder / f"{name}_seg.nii.gz"))
        rows = table_rows(shown)
        csv_file = _write_csv(rows, folder / f"{name}_classes.csv")
        surfaces = [
            write_glb(labels, volume.spacing, shown.classes, folder / f"{name}_{kind}.glb")
            for kind, labels in (("prediction", shown.prediction), ("target", shown.target))
            if labels is not None
        ]
        return (rows, label_file, csv_file, *surfaces, *[None] * (2 - len(surfaces)))

    def predict(self, choice: str, volume_file: str | None, series: str | None = None) -> tuple:
        """For scripts (`/predict` with a volume model): the label volume (`.nii.gz`, the
        input's geometry) and what it holds: the model, the classes, the size (x, y, z), the
        spacing in mm, the modality, each class's volume in mL, and a warning where the
        volume's modality is not the model's."""
        volume, _ = _read(volume_file, None, series)
        recipe, shown = self.recipe(choice), self._predicted(choice, volume, None)
        name = _visible_name(volume_file)
        label_file = write_labels(
            shown.prediction, volume, answer_folder(name) / f"{name}_seg.nii.gz"
        )
        volumes_ml = class_volumes_ml(shown.prediction, volume.spacing, len(shown.classes))
        record = {
            "model": choice,
            "classes": shown.classes,
            "size": list(reversed(volume.shape)),
            "spacing_mm": [round(s, 4) for s in reversed(volume.spacing)],
            "modality": volume.modality or None,  # DICOM says it; a NIfTI does not
            "volumes_ml": {
                c: round(float(ml), 3) for c, ml in zip(shown.classes[1:], volumes_ml, strict=True)
            },
            "mask": label_file.name,
        }
        if _other_modality(volume, recipe):
            record["warning"] = (
                f"a {volume.modality} volume; the model was trained on {recipe.modality}"
            )
        return str(label_file), record

    def _predicted(self, choice: str, volume: Volume, target: Volume | None) -> Segmented:
        """What the views are drawn from: the volume, its prediction (one volume predicted at
        a time) and its target."""
        model = self.model(choice)
        with self._lock:
            prediction = predict_volume(
                model,
                volume,
                self.recipe(choice),
                precision="bf16" if zoo.cpu_has_bf16() else "fp32",
            )
        classes = list(model.pretrained_config.get("classes") or ["background", "foreground"])
        return Segmented(
            volume.array[0],
            volume.spacing,
            prediction,
            None if target is None else target.array,
            classes,
            volume.modality,
        )

    def run(
        self, choice: str, volume_file: str | None, target_file: str | None, series: str, axis: str
    ) -> Iterator[tuple]:
        """The Segment button, in three answers. Once the volume is read: its note, and the
        last volume's answers cleared (its surfaces would keep a visitor's browser drawing
        while this one is predicted). As soon as the model has predicted: the state, the
        window (a CT preset for a CT), the slider on the busiest slice and its views. Then
        `results` and the Dice-per-slice plot (4 s more for a 256 x 256 x 200 volume), leaving
        the slider, window and views as the visitor has moved them meanwhile."""
        volume, target = _read(volume_file, target_file, series)
        name = _visible_name(volume_file)
        note = _note(volume, self.recipe(choice), name)
        cleared = (None, f"{note} Segmenting ...", [], *[None] * 4)
        yield (*cleared, gr.skip(), gr.skip(), None, *[None] * 4)
        shown = self._predicted(choice, volume, target)
        window = "soft tissue" if shown.modality == "CT" else AUTO
        slider, *views = opened(shown, axis, window)
        pending = ([], None, None, None, None)
        yield (shown, f"{note} Scoring and meshing ...", *pending, window, slider, None, *views)
        plot, unmoved = per_slice_plot(shown, axis), gr.skip()  # the visitor's window and slices
        yield (
            shown,
            note,
            *self.results(shown, volume, name),
            unmoved,
            unmoved,
            plot,
            *[unmoved] * 4,
        )


def opened(shown: Segmented, axis: str, window: str) -> tuple:
    """The slider over the slices along `axis`, on the busiest one, and that slice's views."""
    index = busiest_slice(shown, axis)
    maximum = shown.image.shape[AXES.index(axis)] - 1
    return (gr.update(maximum=maximum, value=index), *view_files(shown, axis, index, window))


def per_slice_plot(shown: Segmented, axis: str) -> str | None:
    """The Dice per slice along `axis` (a PNG), with a target; None without."""
    if shown.target is None:
        return None
    return dice_plot(shown, axis, answer_folder("plot") / "dice_per_slice.png")


def moved(shown: Segmented | None, axis: str, window: str) -> tuple:
    """A new axis: the slider over its slices (on the busiest one), the Dice per slice along
    it (with a target), and the views."""
    if shown is None:
        return (gr.update(), None, *[None] * 4)
    slider, *views = opened(shown, axis, window)
    return (slider, per_slice_plot(shown, axis), *views)


def view_files(shown: Segmented | None, axis: str, index: int, window: str) -> list[str | None]:
    """The four views of a slice as PNG files (a folder of this answer's own), or nothing
    before a volume is segmented."""
    if shown is None:
        return [None] * 4
    folder = answer_folder("slice")
    names = ("image", "target", "prediction", "errors")
    drawn = render(shown, axis, index, window)
    files = write_pngs({n: (v, folder / f"{n}.png") for n, v in zip(names, drawn, strict=True)})
    return list(files.values())


def table_rows(shown: Segmented) -> list[list]:
    """Per foreground class: Dice, IoU, HD95, MSD, NSD in mm with a target; the volumes in mL."""
    k = len(shown.classes)
    if shown.target is None:
        predicted = class_volumes_ml(shown.prediction, shown.spacing, k)
        return [
            [name, *[""] * 5, "", round(ml, 3)]
            for name, ml in zip(shown.classes[1:], predicted, strict=True)
        ]
    scores = volume_scores(shown.prediction, shown.target, spacing=shown.spacing, num_classes=k)
    names = ("dice", "iou", "hd95", "msd", "nsd", "volume_target_ml", "volume_pred_ml")
    return [
        [shown.classes[c], *(round(float(row[n]), 3) for n in names)] for c, row in scores.items()
    ]


def busiest_slice(shown: Segmented, axis: str) -> int:
    """The slice along `axis` with the most predicted foreground (the middle one without any)."""
    a = AXES.index(axis)
    counts = (shown.prediction > 0).sum(axis=tuple(i for i in range(3) if i != a))
    return int(counts.argmax()) if counts.any() else shown.prediction.shape[a] // 2


def render(shown: Segmented, axis: str, index: int, window: str) -> tuple[np.ndarray, ...]:
    """Image, target, prediction and error map of one slice (RGB, at the voxels' true aspect)."""
    a = AXES.index(axis)
    index = int(min(max(index, 0), shown.image.shape[a] - 1))
    grey = _windowed(_plane(shown.image, a, index), shown.image, window)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    predicted = _plane(shown.prediction, a, index)
    views = [
        rgb,
        rgb if shown.target is None else overlay(rgb, _plane(shown.target, a, index)),
        overlay(rgb, predicted),
    ]
    views.append(
        _errors(predicted, _plane(shown.target, a, index))
        if shown.target is not None
        else np.zeros_like(rgb)
    )
    rows, columns = _plane_spacing(shown.spacing, a)
    return tuple(_at_aspect(view, rows, columns) for view in views)


def dice_plot(shown: Segmented, axis: str, path: Path) -> str:
    """Dice of each foreground class on each slice along `axis` (a slice without the class in
    either map left out), as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = AXES.index(axis)
    figure, plot = plt.subplots(figsize=(5, 2), dpi=100)
    for c, name in enumerate(shown.classes[1:], start=1):
        p, t = np.moveaxis(shown.prediction == c, a, 0), np.moveaxis(shown.target == c, a, 0)
        both = (p & t).sum(axis=(1, 2)) * 2.0
        total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
        slices = np.flatnonzero(total)
        plot.plot(slices, both[slices] / total[slices], ".-", label=name, markersize=3)
    plot.set(xlabel=f"{axis} slice", ylabel="Dice", ylim=(0, 1.02))
    plot.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return str(path)


def _plane(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One plane as a radiologist views it: axial with anterior up and the patient's left on
    the right; coronal and sagittal with superior up."""
    plane = np.take(array, index, axis=axis)
    return plane if axis == 0 else plane[::-1]


def _plane_spacing(spacing: tuple[float, float, float], axis: int) -> tuple[float, float]:
    rows_and_columns = [s for i, s in enumerate(spacing) if i != axis]
    return rows_and_columns[0], rows_and_columns[1]


def _windowed(plane: np.ndarray, volume: np.ndarray, window: str) -> np.ndarray:
    """A plane as uint8 grey through a CT window (centre, width), or the volume's 1st-99th
    percentiles (automatic: MRI and anything not in Hounsfield units)."""
    if window in WINDOWS:
        centre, width = WINDOWS[window]
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = (
            float(v) for v in np.percentile(volume[:: max(1, volume.shape[0] // 32)], (1, 99))
        )
    scaled = (plane.astype(np.float32) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _errors(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """True positives, false positives and false negatives of the foreground, coloured as the
    2D error map colours them (a voxel of the wrong class counts as both)."""
    out = np.zeros((*predicted.shape, 3), np.uint8)
    out[(predicted > 0) & (predicted == target)] = TP
    out[(predicted > 0) & (predicted != target)] = FP
    out[(target > 0) & (predicted != target)] = FN
    return out


def _at_aspect(view: np.ndarray, row_mm: float, column_mm: float) -> np.ndarray:
    """A view resized (nearest) so its sides are in the voxels' physical proportion, its longer
    side DISPLAY pixels."""
    height, width = view.shape[0] * row_mm, view.shape[1] * column_mm
    scale = DISPLAY / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(view).resize(size, Image.Resampling.NEAREST))


def _read(
    volume_file: str | None, target_file: str | None, series: str | None
) -> tuple[Volume, Volume | None]:
    """The uploaded volume and its optional target, under the page's voxel limit; a reader's
    message names the uploaded files, not the server's copies."""
    if not volume_file:
        raise gr.Error(
            "Upload a volume: NIfTI (.nii, .nii.gz), NRRD, MHA, or a zip of a DICOM series"
        )
    try:
        volume = read_volume(volume_file, series=series or None, max_voxels=MAX_VOXELS)
        target = (
            read_label_volume(target_file, volume, max_voxels=MAX_VOXELS) if target_file else None
        )
    except DataError as error:
        raise gr.Error(_named(str(error), volume_file, target_file)) from None
    return volume, target


def _visible_name(path: str) -> str:
    """The uploaded file's own name without its suffix: what its outputs are named by."""
    return volume_stem(Path(path).name) or "volume"


def _named(message: str, *paths: str | None) -> str:
    """A reader's message with the server's temporary paths replaced by the files' names."""
    for path in filter(None, paths):
        message = message.replace(str(path), Path(path).name)
    return message


def _other_modality(volume: Volume, recipe: VolumeRecipe) -> bool:
    """Whether the volume says it is another modality than the model was trained on."""
    return bool(volume.modality and recipe.modality and volume.modality != recipe.modality)


def _note(volume: Volume, recipe: VolumeRecipe, name: str) -> str:
    spacing = " x ".join(f"{s:.2f}" for s in reversed(volume.spacing))
    depth, height, width = volume.shape
    modality = volume.modality or "modality not stated"
    note = f"**{name}**: {width} x {height} x {depth} voxels of {spacing} mm, {modality}."
    if _other_modality(volume, recipe):
        note += (
            f" **Warning:** this volume is {volume.modality}; the model was trained on "
            f"{recipe.modality}, so its prediction here is not to be trusted."
        )
    return note


def _write_csv(rows: list[list], path: Path) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE)
        writer.writerows(rows)
    return str(path)
