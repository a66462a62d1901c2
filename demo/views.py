"""What the web demo shows for a prediction: overlays of the target and the prediction, the
error map, the legend, the metrics rows and the notes, written as PNG files for Gradio.

A `Prediction` keeps what the views are drawn from; `render(prediction, threshold)` returns the
views by name (`VIEWS`), so that a new threshold redraws them without running the model again.
The objects (`demo.objects`) are counted, outlined, measured and matched against the target's:
a model of the object target splits touching ones (`trainers.scores.objects.split_objects`), any
other gives its mask's connected components.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from demo.objects import Objects, matched_outlines
from demo.overlays import CLASS_COLOURS, overlay
from trainers.data.medical import Decoded
from trainers.data.readers import DataError, read_mask, read_objects
from trainers.scores import metrics
from trainers.scores.objects import components, foreground, objects_of
from trainers.scores.plots import FN, FP, TP, error_map
from trainers.scores.scoring import class_map
from zoo import SegmentationModel

METRIC_NAMES = ("dice", "iou", "hd95", "precision", "recall")
VIEWS = (
    "target",
    "prediction",
    "errors",
    "slider",
    "metrics",
    "mask",
    "note",
    "count",
    "objects",
    "object_metrics",
    "table",
    "object_files",
)
OBJECT_METRICS = ("dsb_score", "ap50", "f1_50", "pq", "aji", "count_error")


_OUTPUT_LOCK = threading.Lock()
# Two PNG writers kept for the process: starting threads per answer cost 7 ms of a 200 ms one.
_PNG_WRITERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="png")


@functools.cache
def _output() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="bioseg-app-")  # removed when the process exits


def output_dir() -> Path:
    """The private folder (0700) of every answer's files, made on first use, gone at exit.
    Made under a lock: two first requests at once would each make one, and the one not kept
    would be deleted, answers and all, when it is garbage-collected."""
    with _OUTPUT_LOCK:
        return Path(_output().name)


def answers_dir() -> Path:
    """Where the answers' folders are made (and swept an hour after they were made)."""
    return output_dir() / "answers"


def sessions_dir() -> Path:
    """Where the visitors' sessions keep their pairs and models: never swept by the answers;
    each session's folder is deleted when its session ends (`demo.finetune.Session.end`)."""
    return output_dir() / "sessions"


@dataclass
class Prediction:
    """What the views are drawn from, kept for a visitor so that a new threshold needs no model
    run: the image as shown and the class probabilities, in a quarter and a half of their
    float32 size (a 4096x4096 binary prediction keeps 84 MB, not 268 MB), and the files of the
    views that no threshold changes (image, target), encoded once."""

    rgb: np.ndarray  # H x W x 3, uint8
    probabilities: np.ndarray  # K x H x W, float16
    target: np.ndarray | None
    classes: list[str]
    name: str
    source: Decoded  # what the file said: pixel size, frames, window (its pixels not kept)
    intensity: np.ndarray | None = None  # H x W grey in [0, 1], float16: objects' intensity
    object_target: bool = False  # a model of the object target (background, interior, rim)
    target_objects: np.ndarray | None = None  # the target's objects, a label image
    still: dict[str, str] = field(default_factory=dict)  # view -> PNG file


def class_names(model: SegmentationModel) -> list[str]:
    """The saved class names, or 'background' and one name per other class."""
    saved = model.pretrained_config.get("classes")
    if saved:
        return list(saved)
    if model.num_classes == 1:
        return ["background", "foreground"]
    return ["background", *(f"class {c}" for c in range(1, model.num_classes))]


def labels_of(prediction: Prediction, threshold: float) -> np.ndarray:
    """An H x W uint8 label map by the project's one rule (`trainers.scores.scoring`): probability
    strictly above `threshold` for one class, else the most probable class; for a model of the
    object target, its foreground as 1 (`trainers.scores.objects.foreground`, as predict and
    evaluation count it)."""
    if prediction.object_target:
        return foreground(prediction.probabilities).view(np.uint8)
    return class_map(prediction.probabilities, threshold).astype(np.uint8, copy=False)


def target_objects(path: str, target: np.ndarray) -> np.ndarray:
    """The target's objects: a 16-bit label image as it is (one id per object), any other
    mask's connected components of the foreground."""
    with Image.open(path) as header:
        labelled = header.mode.startswith("I")
    return read_objects([path]) if labelled else components(target > 0)


def read_target(
    path: str, shape: tuple[int, int], binary: bool, max_pixels: int | None = None
) -> np.ndarray:
    """The target mask at `path` as int64 labels; a DataError unless it has the image's shape."""
    target = read_mask(path, mode="binary" if binary else "labels", max_pixels=max_pixels)
    if target.shape != shape:
        raise DataError(
            f"The target mask {Path(path).name} is {target.shape[1]}x{target.shape[0]} pixels "
            f"but the image is {shape[1]}x{shape[0]}: a target must match its image."
        )
    return target.astype(np.int64)


def foreground_classes(classes: list[str]) -> list[tuple[int, str]]:
    """Each foreground class id with its name ("class c" where `classes` has none)."""
    return [
        (c, classes[c] if c < len(classes) else f"class {c}")
        for c in range(1, max(len(classes), 2))
    ]


def metric_rows(labels: np.ndarray, target: np.ndarray, classes: list[str]) -> list[list]:
    """One row per foreground class: the class, then Dice, IoU, HD95, precision and recall."""
    rows = []
    for c, name in foreground_classes(classes):
        values = metrics.binary_metrics(labels == c, target == c)
        rows.append([name, *(round(float(values[m]), 4) for m in METRIC_NAMES)])
    return rows


def legend(classes: list[str]) -> str:
    swatches = [
        f"<span style='color:rgb{CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]}'>&#9632;</span> "
        f"{name}"
        for c, name in enumerate(classes)
        if c > 0
    ]
    errors = " &nbsp; ".join(
        f"<span style='color:rgb{colour}'>&#9632;</span> {name}"
        for colour, name in ((TP, "true positive"), (FP, "false positive"), (FN, "false negative"))
    )
    return f"**Overlay:** {' &nbsp; '.join(swatches)} &nbsp;&nbsp; **Error map:** {errors}"


def answer_folder(name: str, parent: Path | None = None) -> Path:
    """A new folder for the files of one answer, in `parent` (default: `answers_dir()`); folders
    there older than an hour are deleted, so the answers do not grow without bound. Only
    answers live there: the visitors' sessions (`sessions_dir()`) are never swept by it."""
    parent = parent or answers_dir()
    parent.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 3600
    for old in parent.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another request may delete it first
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))


def write_png(pixels: np.ndarray, path: Path) -> str:
    """Views go to Gradio as PNG files, not arrays: Gradio copies a file into its cache
    atomically, but rewrites an array's cache file in place, where a concurrent request with
    the same answer (two visitors on one example) can read it half-written. zlib level 1 with
    run-length matching: lossless, 6x faster to write than Pillow's default, and on a fundus
    photograph 15 % smaller than plain level 1."""
    Image.fromarray(pixels).save(path, compress_level=1, compress_type=zlib.Z_RLE)
    return str(path)


def write_pngs(views: dict[str, tuple[np.ndarray, Path]]) -> dict[str, str]:
    """Each view (name -> pixels, path) written as `write_png`, two at a time: Pillow lets go
    of the GIL while it compresses, so both cores work."""
    files = _PNG_WRITERS.map(lambda view: write_png(*view), views.values())
    return dict(zip(views, files, strict=True))


def render(prediction: Prediction | None, threshold: float) -> dict[str, Any]:
    """The views by name (`VIEWS`): target and prediction overlays, error map, slider (image |
    prediction), metrics rows, mask file, note, and the objects' count, outlines, scores,
    table and files. The image and target views are written once per prediction; a new
    threshold redraws only the rest."""
    empty = dict.fromkeys(VIEWS) | {"metrics": [], "object_metrics": [], "table": []}
    if prediction is None:  # nothing segmented yet, or kept longer than the state lives
        return empty | {"note": "Press **Segment** first, then move the threshold."}
    labels = labels_of(prediction, threshold)
    classes = prediction.classes[:2] if prediction.object_target else prediction.classes
    binary = len(classes) == 2
    still, rgb = prediction.still, prediction.rgb
    views = {}
    if not still:
        still["folder"] = str(answer_folder(prediction.name))
        views["image"] = rgb, Path(still["folder"]) / "image.png"
        if prediction.target is not None:
            views["target"] = overlay(rgb, prediction.target), Path(still["folder"]) / "target.png"
    folder = Path(tempfile.mkdtemp(prefix="threshold-", dir=still["folder"]))
    views["prediction"] = overlay(rgb, labels), folder / "prediction.png"
    views["mask"] = (
        (labels * 255 if binary else labels),
        folder / f"{prediction.name}_predicted_mask.png",
    )
    found = object_views(prediction, threshold, folder, views)
    files = write_pngs(views)
    still.update((name, files.pop(name)) for name in ("image", "target") if name in files)
    shown = (
        empty
        | found
        | {
            "prediction": files["prediction"],
            "slider": (still["image"], files["prediction"]),
            "mask": files["mask"],
            "objects": files["objects"],
        }
    )
    about = source_note(prediction.source)
    if prediction.target is None:
        note = "<br>No target given: add a mask to see the metrics."
        return shown | {"note": legend(classes) + note + about}
    physical = physical_hd95(labels, prediction.target, classes, prediction.source)
    return shown | {
        "target": still["target"],
        "errors": files.get("errors"),
        "metrics": metric_rows(labels, prediction.target, classes),
        "note": legend(classes) + about + physical,
    }


def object_views(
    prediction: Prediction, threshold: float, folder: Path, views: dict[str, tuple]
) -> dict[str, Any]:
    """The objects' views: their outlines (and, with a target, the error map with each object
    outlined by its match) added to `views` to be written; the count, the object scores, the
    table and the files returned."""
    probabilities = prediction.probabilities.astype(np.float32)
    labels = objects_of(probabilities, threshold, object_target=prediction.object_target)
    source = prediction.source
    area = source.spacing[0] * source.spacing[1] if source.spacing else None
    intensity = prediction.intensity
    if intensity is None:  # a prediction kept without its image's intensities: the view's
        intensity = prediction.rgb.mean(axis=2) / 255
    found = Objects.of(labels, intensity, area, source.unit)
    views["objects"] = found.outlined(prediction.rgb), folder / "objects.png"
    thing = prediction.classes[1] if len(prediction.classes) > 1 else "object"
    count = f"**{found.count} {plural(thing, found.count)}**"
    shown = {"table": found.rows(), "object_files": found.write(folder, prediction.name)}
    if prediction.target is None or prediction.target_objects is None:
        return shown | {"count": count}
    errors = error_map(labels > 0, prediction.target > 0)
    errors, scores = matched_outlines(errors, labels, prediction.target_objects)
    views["errors"] = errors, folder / "errors.png"
    row = [round(float(scores[name]), 4) for name in OBJECT_METRICS]
    return shown | {
        "count": f"{count}; target: {scores['true_objects']}",
        "object_metrics": [row],
    }


def plural(thing: str, count: int) -> str:
    """`thing` in the plural for a count other than one (nucleus: nuclei)."""
    if count == 1:
        return thing
    return thing[:-2] + "i" if thing.endswith("us") else thing + "s"


def source_note(source: Decoded) -> str:
    """What the file said, for the note under the views: frame, window, pixel size."""
    parts = []
    if source.note.startswith("plane"):
        parts.append(source.note)
    elif source.frames > 1:
        parts.append(f"frame {source.index} of {source.frames}")
    if source.note.startswith(("window", "full range")):  # a grey DICOM's display
        parts.append(f"shown through its {source.note}")
    if source.spacing:
        parts.append(f"pixel {source.spacing[0]:g} x {source.spacing[1]:g} {source.unit}")
    return "<br>**File:** " + "; ".join(parts) if parts else ""


def physical_hd95(
    labels: np.ndarray, target: np.ndarray, classes: list[str], source: Decoded
) -> str:
    """HD95 per class in the file's physical unit, when it states a pixel size."""
    if not source.spacing:
        return ""
    values = [
        f"{name} {metrics.hd95(labels == c, target == c, spacing=source.spacing):.3g} {source.unit}"
        for c, name in foreground_classes(classes)
    ]
    return "<br>**HD95 in " + source.unit + ":** " + ", ".join(values)
