"""bioseg web demo: upload a scan or micrograph, pick a model, see target and prediction.

    python app.py                             # offline, on the bundled weights and examples
    python app.py --weights OWNER/NAME        # also offer published weights from the Hub
    BIOSEG_WEIGHTS=OWNER/NAME python app.py   # the same, as a Hugging Face Space setting
    gradio app.py                             # hot reload while editing

Models load once and stay cached. Images are read on the server (16-bit grey TIFF and PNG at
full depth), outputs are PNG, and large images are predicted tile by tile.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

import zoo
from demo import api, finetune
from demo.annotation import PAINTED_ALPHA, labels_to_layer, layer_to_labels
from demo.objects import HEADERS as OBJECT_HEADERS
from demo.overlays import CLASS_COLOURS, display_rgb, overlay
from demo.serving import ModelShelf, Served, predict_image, serve
from demo.tasks import TASKS, data_set_name
from demo.views import (
    METRIC_NAMES,
    VIEWS,
    Prediction,
    answer_folder,
    class_names,
    labels_of,
    metric_rows,
    read_target,
    render,
    sessions_dir,
    target_objects,
    write_png,
)
from trainers.data.medical import Decoded
from trainers.data.readers import (
    DataError,
    check_pixel_count,
    decoding,
    read_decoded,
    set_pixel_limit,
)
from trainers.scores.scoring import checked_threshold
from zoo._hub import check_repo_id, download_file

LOG = logging.getLogger("bioseg.app")
ROOT = Path(__file__).resolve().parent
BUNDLED = ROOT / "weights"
RUNS = Path(os.environ.get("BIOSEG_RUNS", ROOT / "runs"))  # local training runs, listed too
MAX_PIXELS = int(os.environ.get("BIOSEG_APP_MAX_PIXELS", 8192 * 8192))  # refused before decoding
set_pixel_limit(MAX_PIXELS)  # every reader's, and Pillow's, for the whole server; never lifted
# A model id typed by a visitor may describe any model: refused above this, before download.
MAX_PARAMETERS = int(os.environ.get("BIOSEG_APP_MAX_PARAMETERS", 400_000_000))
# A real fundus photograph that scikit-image ships, for the DRIVE model (it has no target).
# Its ihc.png and cell.png are out of the nuclei model's domain (DAB-stained membranes, noise):
# the nuclei examples are DSB 2018 test images with their targets, under examples/dsb2018/.
SKIMAGE_EXAMPLES = {"retina.jpg": "drive"}


def weight_choices(extra: list[str] | None = None) -> dict[str, str]:
    """Label -> location of every model with weights: bundled, local runs, Hub ids."""
    choices = {}
    for folder in sorted(BUNDLED.glob("*/model.safetensors")):
        choices[f"{folder.parent.name} (bundled)"] = str(folder.parent)
    for folder in sorted(RUNS.glob("*/model.safetensors")):
        choices[f"{folder.parent.name} (run)"] = str(folder.parent)
    hub = [*os.environ.get("BIOSEG_WEIGHTS", "").split(","), *(extra or [])]
    for repo_id in filter(None, (h.strip() for h in hub)):
        choices[f"{repo_id} (Hub)"] = repo_id
    return choices


REPORT_FAMILIES = ("fcn", "vgg16_fcn")  # the report's models, compared with a U-Net


@dataclass(frozen=True)
class Listed:
    """A listed model with weights on disk: its data set, family and mean test Dice."""

    label: str
    dataset: str
    family: str
    test_dice: float


def test_summary(folder: Path) -> dict | None:
    """The evaluation summary kept beside local weights (bundled: summary.json; runs: eval/)."""
    for path in (folder / "summary.json", folder / "eval" / "summary.json"):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


MAX_SUMMARY_BYTES = 1_000_000  # a Hub repo's summary.json is read only below this size


def hub_test_summary(repo_id: str, token: bool | None) -> dict | None:
    """summary.json of a Hub repo (trainers.push uploads it), fetched with `token` (None: the
    host's, for listed repos; False: none, for typed ones); None when absent or too large."""
    try:
        path = download_file(repo_id, None, "summary.json", token=token)
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (zoo.PretrainedWeightsError, OSError, ValueError) as error:
        LOG.info("%s: no test figures for the card (%s)", repo_id, error)
        return None


def test_figures(summary: dict) -> str:
    """The card's line of test figures; KeyError, TypeError or ValueError when `summary` is
    not an evaluation summary written by trainers.evaluate."""
    dice, iou, hd95 = (float(summary["metrics"][k]["mean"]) for k in ("dice", "iou", "hd95"))
    pooled = float(summary.get("pooled", {}).get("dice", float("nan")))
    return (
        f"Test ({summary.get('split', 'test')} split, {summary.get('n_images', '?')} "
        f"images, threshold {summary.get('threshold', 0.5)}), per image: Dice "
        f"{dice:.3f}, IoU {iou:.3f}, HD95 {hd95:.1f} px; pooled Dice {pooled:.3f}."
    )


def listed_models(choices: dict[str, str]) -> list[Listed]:
    """The models of `choices` stored on disk, best test Dice first (Hub ids are left out)."""
    found = []
    for label, location in choices.items():
        folder = Path(location)
        if not folder.is_absolute():
            continue
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            summary = test_summary(folder)
            dice = summary["metrics"]["dice"]["mean"] if summary else -1
            family = zoo.get_spec(config["model"]).family
        except (OSError, ValueError, KeyError, TypeError) as error:
            LOG.warning("%s: no data set or test figures for the defaults (%s)", folder, error)
            continue
        found.append(Listed(label, str(config.get("dataset", "")), family, float(dice)))
    return sorted(found, key=lambda model: -model.test_dice)


def load_model(location: str, session: finetune.Session | None = None) -> Served:
    """The model at `location`, loaded once and shared (see `demo.serving.ModelShelf`); one of
    the visitor's own fine-tuned models, from its session's folder (the last four kept
    loaded), where `session` holds it."""
    if session is not None and location in {str(p) for p in session.models.values()}:
        return _finetuned(location)
    return SHELF.get(location, listed=location in CHOICES.values())


@functools.lru_cache(maxsize=4)
def _finetuned(location: str) -> Served:
    """A visitor's model, its exported graph in its own folder (counted in their disk budget,
    deleted with their session)."""
    return serve(location, ARGS.engine, cache=Path(location) / "engine")


def resolve_location(choice: str | None, session: finetune.Session | None = None) -> str:
    """A dropdown label, one of this visitor's fine-tuned models by its token (found in their
    own session only), or a Hub id typed into the box (never a path on this server)."""
    if not choice:
        raise gr.Error("Pick a model first (no weights are bundled or listed).")
    if choice in CHOICES:
        return CHOICES[choice]
    if session is not None and choice in session.models:
        return str(session.models[choice])
    try:
        return check_repo_id(choice.strip())
    except ValueError as error:
        raise gr.Error(f"{error}. Pick a listed model or type a Hub id OWNER/NAME.") from None


# What choosing or loading a model raises for a bad choice or bad files (a typed id, a
# missing or broken folder, a Hub failure); anything else is a bug and is not hidden.
LOAD_ERRORS = (gr.Error, OSError, ValueError, zoo.PretrainedWeightsError, zoo.ModelBuildError)


def saved_threshold(choice: str | None, session: finetune.Session | None = None) -> float:
    """The threshold saved with the model; 0.5 when it has none or cannot be loaded (the
    Segment button then says why)."""
    try:
        model = load_model(resolve_location(choice, session), session).model
    except LOAD_ERRORS:
        return 0.5
    return float(model.pretrained_config.get("threshold", 0.5))


def model_card(choice: str | None, session: finetune.Session | None = None) -> str:
    """What the chosen model is for, in a few lines: data set, input, test figures, size."""
    try:
        location = resolve_location(choice, session)
        model = load_model(location, session).model
    except LOAD_ERRORS as error:  # the Segment button says it in full
        return f"No card: the model could not be loaded ({error})."
    config = model.pretrained_config
    dataset = config.get("dataset")
    trained_on = data_set_name(dataset)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    lines = [
        f"**{choice}**: {model.spec.summary}.",
        f"Trained on {trained_on}."
        if trained_on
        else "No card: its config.json does not say "
        "what it was trained on; judge it on your own targets.",
        f"Input: {model.in_channels} channel(s) in [0, 1], normalized with mean "
        f"{config.get('mean', list(model.spec.mean))} and std "
        f"{config.get('std', list(model.spec.std))}; {parameters:.1f}M parameters.",
    ]
    local = Path(location).is_absolute()
    listed = location in CHOICES.values()
    summary = (
        test_summary(Path(location))
        if local
        else hub_test_summary(location, token=None if listed else False)
    )
    try:
        lines.append(test_figures(summary or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        where = "beside its weights" if local else "in its Hub repo (pushed with trainers.push?)"
        lines.append(f"No test figures: no readable evaluation summary.json {where}.")
    limits = (
        config.get("limitations") or "images unlike its training data; check it on yours first."
    )
    lines.append(f"Not for: {limits}")
    return "  \n".join(lines)


def read_inputs(
    image_path: str | None, image_file: str | None, frame: float | None = 0
) -> tuple[Decoded, str]:
    """The uploaded image (its frame, page or plane `frame`), and a name for its files."""
    path = image_file or image_path
    if not path:
        raise gr.Error("Upload an image (or pick an example) first.")
    try:
        decoded = read_decoded(path, index=frame_index(frame), max_pixels=MAX_PIXELS)
    except DataError as error:
        raise gr.Error(str(error)) from None
    # The name labels the output files; it never chooses a folder.
    return decoded, re.sub(r"[^\w.-]", "_", Path(path).stem)[:40].lstrip(".") or "image"


def frame_index(frame: object) -> int:
    """The frame field as an index; a message when it is not a whole number. (The field does
    not round: Gradio's rounding fails on NaN and infinity with a traceback.)"""
    if frame is None:
        return 0
    if not isinstance(frame, int | float) or not math.isfinite(frame) or frame != int(frame):
        raise gr.Error(f"The frame must be a whole number, got {frame!r}.")
    return int(frame)


def visitor_threshold(threshold: object) -> float:
    """A threshold a visitor sent, checked (a NaN passes the slider's bounds); a message if not."""
    try:
        return checked_threshold(threshold)
    except ValueError as error:
        raise gr.Error(f"{str(error)[0].upper()}{str(error)[1:]}.") from None


def served_model(choice: str | None, session: finetune.Session | None = None) -> Served:
    """The chosen model, loaded; a message for the visitor (the traceback to the log) when it
    cannot be."""
    location = resolve_location(choice, session)
    try:
        return load_model(location, session)
    except Exception as error:
        LOG.warning("could not load model %s", location, exc_info=True)
        raise gr.Error(f"Could not load model {choice!r}: {error}") from None


def predicted(served: Served, image: np.ndarray, name: str, progress=None) -> np.ndarray:
    """The served model's class probabilities for the image; a message naming the image when
    the model cannot run on it."""
    try:
        return predict_image(served, image, tile_progress(progress))
    except (ValueError, zoo.ModelBuildError) as error:  # a too small image, a broken plugin
        raise gr.Error(f"{name}: {error}") from None
    except Exception as error:  # out of memory, a fault in a plugin's forward
        LOG.exception("model %s failed on %s", served.model.spec.name, name)
        raise gr.Error(f"{name}: the model failed ({type(error).__name__}: {error})") from None


def predict(
    choice: str, image_file: str | None, threshold: float | None = None, frame: float | None = 0
) -> tuple[str, dict]:
    """For scripts (`/predict`): the mask file (an object model's: its label image) and what it
    holds: the model's name, the threshold used (None: the model's saved one), the classes,
    the image's size; for an object model its count and object table (`demo.api.answer`)."""
    threshold = None if threshold is None else visitor_threshold(threshold)
    decoded, name = read_inputs(None, image_file, frame)
    served = served_model(choice)
    probabilities = predicted(served, decoded.pixels, name)
    return api.answer(served.model, decoded.pixels, probabilities, name, threshold, choice,
                      answer_folder(name))  # fmt: skip


def run_model(
    choice: str,
    decoded: Decoded,
    name: str,
    mask_file: str | None,
    progress=None,
    session: finetune.Session | None = None,
) -> tuple[Prediction, str]:
    """The chosen model's prediction for the image, and a message if the target was not used."""
    image = decoded.pixels
    served = served_model(choice, session)
    probabilities = predicted(served, image, name, progress)
    model, target, message = served.model, None, ""
    if mask_file:
        try:
            binary = model.num_classes == 1 or bool(model.pretrained_config.get("objects"))
            target = read_target(mask_file, image.shape[:2], binary, MAX_PIXELS)
        except DataError as error:
            message = f"**Target not used:** {error}"
            gr.Warning(str(error))
    about = dataclasses.replace(decoded, pixels=np.empty((0, 0, 1), np.float32))
    prediction = Prediction(
        display_rgb(image), probabilities, target, class_names(model), name, about,
        intensity=image.mean(axis=2, dtype=np.float32).astype(np.float16),
        object_target=bool(model.pretrained_config.get("objects")),
        target_objects=None if target is None else target_objects(mask_file, target),
    )  # fmt: skip
    return prediction, message


def segment(
    choice: str,
    image_path: str | None,
    image_file: str | None,
    mask_file: str | None,
    threshold: float,
    frame: float | None = 0,
    session: finetune.Session | None = None,
    progress=gr.Progress(),  # noqa: B008 (Gradio's way to report progress)
):
    """Run the model on the image; the views and metrics come from `render`."""
    threshold = visitor_threshold(threshold)
    decoded, name = read_inputs(image_path, image_file, frame)
    prediction, message = run_model(choice, decoded, name, mask_file, progress, session)
    del decoded  # the float image is not needed for the views: freed before they are drawn
    return (*shown(render(prediction, threshold), message), prediction)


def redraw(prediction: Prediction | None, threshold: float) -> tuple:
    """The views at a new threshold, from the kept prediction: no model run."""
    return shown(render(prediction, visitor_threshold(threshold)))


def shown(views: dict[str, Any], message: str = "") -> tuple:
    """`render`'s views in the order of VIEWS (the components that show them), a view it did
    not redraw left as it is; `message` under the note."""
    if message:
        views = views | {"note": f"{views['note']}<br>{message}"}
    return tuple(views.get(name, gr.skip()) for name in VIEWS)


def tile_progress(progress: gr.Progress | None) -> Callable[[int, int], None] | None:
    """Gradio's progress bar, told of each tile done."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((done, total), desc="tiles")

    return report


def segment_example(image_path: str, mask_file: str | None, choice: str):
    """An example's row (image, target, model) segmented at the model's saved threshold."""
    return segment(choice, image_path, None, mask_file, saved_threshold(choice))


def checked_editor(**options) -> gr.ImageEditor:
    """A `gr.ImageEditor` whose payload is checked as an upload is: each image's pixel count is
    read from its header and held to `MAX_PIXELS` before it is decoded, and an image that
    cannot be decoded is refused with a message instead of a traceback.

    The check wraps the editor's own decoding step on this instance: a subclass would do the
    same, but Gradio writes a type stub (app.pyi) beside the module of every component class.
    """
    editor = gr.ImageEditor(**options)
    decode = editor.convert_and_format_image

    def checked_decode(file: FileData | bytes | None, flatten_on_white: bool = False):
        if file is None:
            return None
        source = file.path if isinstance(file, FileData) else io.BytesIO(file)
        try:
            with decoding("the drawing"):
                with Image.open(source) as header:
                    check_pixel_count("the drawing", header.size, MAX_PIXELS)
                return decode(file, flatten_on_white)
        except DataError as error:
            raise gr.Error(str(error)) from None

    editor.convert_and_format_image = checked_decode
    return editor


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _editor_value(background: np.ndarray, layer: np.ndarray | None = None) -> dict:
    return {"background": background, "layers": [] if layer is None else [layer], "composite": None}


def edit_target(image_path: str | None, image_file: str | None):
    """The image into the editor, to paint its target over it."""
    image = read_inputs(image_path, image_file)[0].pixels
    return _editor_value(display_rgb(image)), image_file or image_path


def edit_prediction(
    prediction: Prediction | None, threshold: float, image_path: str | None, image_file: str | None
):
    """The prediction at this threshold into the editor, as a layer to correct."""
    if prediction is None:
        raise gr.Error("Press Segment first: there is no prediction to correct yet.")
    layer = labels_to_layer(labels_of(prediction, threshold), CLASS_COLOURS)
    return _editor_value(prediction.rgb, layer), image_file or image_path


def drawing_to_mask(
    drawing: dict | None,
    source: str | None,
    choice: str,
    image_path: str | None,
    image_file: str | None,
    session: finetune.Session | None = None,
) -> tuple[str, str]:
    """The painted layers as a mask PNG at the image's full size (0/255 for one class, class
    ids otherwise): the target for Segment, and a file to download."""
    path = image_file or image_path
    if drawing is None or source is None:
        raise gr.Error("Load the image or the prediction into the editor and paint first.")
    if path != source:
        raise gr.Error(
            "The drawing was made on another image than the one loaded now: load this image "
            "into the editor again (nothing of the drawing is used)."
        )
    decoded, name = read_inputs(image_path, image_file)
    image = decoded.pixels
    model = load_model(resolve_location(choice, session), session).model
    colours = CLASS_COLOURS[: max(1, model.num_classes - 1)]
    layers = drawing.get("layers") or []
    merged = np.zeros((*np.asarray(drawing["background"]).shape[:2], 4), dtype=np.uint8)
    for layer in layers:  # later layers paint over earlier ones
        painted = layer[..., 3] >= PAINTED_ALPHA
        merged[painted] = layer[painted]
    try:
        labels = layer_to_labels(merged, image.shape[:2], colours, source=f"drawing on {name}")
    except DataError as error:
        raise gr.Error(str(error)) from None
    mask = (labels > 0) * 255 if model.num_classes == 1 else labels
    mask_file = write_png(mask.astype(np.uint8), answer_folder(name) / f"{name}_drawn_mask.png")
    return mask_file, mask_file


def compare(
    choice_a: str,
    choice_b: str,
    image_path: str | None,
    mask_file: str | None,
    threshold=0.5,
    session: finetune.Session | None = None,
):
    """Two models on the same image, side by side, with their metrics."""
    decoded, name = read_inputs(image_path, None)
    folder, outputs, rows = answer_folder(name), [], []
    for side, choice in zip("ab", (choice_a, choice_b), strict=True):
        prediction, _ = run_model(choice, decoded, name, mask_file, session=session)
        labels = labels_of(prediction, threshold)
        # An object model's labels are its foreground: scored as one class, as render does.
        classes = prediction.classes[:2] if prediction.object_target else prediction.classes
        view = overlay(prediction.rgb, labels)
        outputs.append(write_png(view, folder / f"prediction_{side}.png"))
        if prediction.target is not None:
            rows += [[choice, *row] for row in metric_rows(labels, prediction.target, classes)]
    return outputs[0], outputs[1], rows


def examples() -> list[list]:
    """scikit-image's bundled images, then image/mask pairs under examples/ or BIOSEG_EXAMPLES."""
    import skimage

    # data set -> its best model by test Dice (bundled models win over runs on a tie).
    by_dataset = {}
    for model in LISTED:
        by_dataset.setdefault(model.dataset, model.label)
    default = next(iter(CHOICES), "")
    rows = []
    for file, dataset in SKIMAGE_EXAMPLES.items():
        path = Path(skimage.data_dir) / file
        if path.is_file():
            rows.append([str(path), None, by_dataset.get(dataset, default)])
    folder = Path(os.environ.get("BIOSEG_EXAMPLES", ROOT / "examples"))
    for mask in sorted(folder.glob("**/*_mask.png")):
        image = mask.with_name(mask.name.removesuffix("_mask.png") + ".png")
        if image.is_file():
            rows.append([str(image), str(mask), by_dataset.get(mask.parent.name, default)])
    return rows


def example_image(model: zoo.SegmentationModel) -> np.ndarray | None:
    """The first example image of the model's data set (the engine's bf16 agreement check is
    made on it), or None."""
    dataset = model.pretrained_config.get("dataset")
    for image, _, _ in EXAMPLES:
        path = Path(image)
        if SKIMAGE_EXAMPLES.get(path.name, path.parent.name) == dataset:
            return read_decoded(path).pixels
    return None


def dropdown_entries() -> list[tuple[str, str]]:
    """The dropdowns' entries: each label says the model's task, the value stays its name."""
    tasks = {model.label: TASKS.get(model.dataset) for model in LISTED}
    return [(f"{c}: {tasks[c]}" if tasks.get(c) else c, c) for c in CHOICES]


def report_comparisons(example_rows: list[list]) -> list[list]:
    """Compare-tab examples: each report model against the best other model of its data set,
    on that data set's first example with a target."""
    rows = []
    pairs = {row[2]: row for row in example_rows if row[1] is not None}  # model -> its example
    for report in (m for m in LISTED if m.family in REPORT_FAMILIES):
        peers = [
            m for m in LISTED if m.dataset == report.dataset and m.family not in REPORT_FAMILIES
        ]
        if peers and peers[0].label in pairs:
            image, mask, _ = pairs[peers[0].label]
            rows.append([report.label, peers[0].label, image, mask])
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bioseg web demo")
    parser.add_argument("--weights", action="append", default=[], help="a Hub id OWNER/NAME")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument(
        "--engine",
        choices=zoo.ENGINES,
        default=os.environ.get(zoo.ENGINE_ENV) or None,
        help=f"inference engine (default: ${zoo.ENGINE_ENV}, else the fastest measured here)",
    )
    return parser.parse_known_args(argv)[0]  # `gradio app.py` passes arguments of its own


ARGS = parse_args()
CHOICES = weight_choices(ARGS.weights)
SHELF = ModelShelf(ARGS.engine, MAX_PARAMETERS, sample=lambda model: example_image(model))
LISTED = listed_models(CHOICES)
EXAMPLES = examples()  # read once: the Segment tab's rows and the Compare tab's pairs
COMPARISONS = report_comparisons(EXAMPLES)
ENTRIES = dropdown_entries()


def segment_inputs() -> SimpleNamespace:
    """The Segment tab's left column: the model and its card, the image, its target, the
    threshold and the button."""
    ui = SimpleNamespace()
    ui.model_choice = gr.Dropdown(
        ENTRIES,
        value=next(iter(CHOICES), None),
        label="Model (or type a Hub id OWNER/NAME)",
        allow_custom_value=True,
    )
    ui.card = gr.Markdown()  # what the model is for; filled on load and on change
    ui.image_in = gr.Image(
        type="filepath", label="Image", sources=["upload", "clipboard"], format="png",
        image_mode=None,
    )  # fmt: skip
    ui.image_file = gr.File(
        label="Image file (DICOM, TIFF and OME-TIFF, 16-bit PNG...)",
        type="filepath",
        elem_id="image-file",
    )
    ui.frame = gr.Number(
        0, minimum=0, step=1, label="Frame, page or plane (DICOM, TIFF stacks)",
        elem_id="frame",
    )  # fmt: skip
    ui.mask_in = gr.File(label="Target mask (optional)", type="filepath", elem_id="mask-file")
    ui.threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold")
    ui.run = gr.Button("Segment", variant="primary")
    return ui


def segment_outputs() -> list:
    """The Segment tab's right column: its views, in the order of VIEWS."""
    with gr.Row():
        target_out = gr.Image(label="Target", format="png", interactive=False)
        pred_out = gr.Image(label="Prediction", format="png", interactive=False)
    note_out = gr.Markdown(elem_id="note")
    metrics_out = gr.Dataframe(
        headers=["class", *METRIC_NAMES], label="Metrics", interactive=False, elem_id="metrics"
    )
    with gr.Row():
        error_out = gr.Image(label="Error map", format="png", interactive=False)
        slider_out = gr.ImageSlider(label="Image | prediction", format="png")
    mask_out = gr.File(label="Predicted mask (PNG, full resolution)")
    count_out = gr.Markdown(elem_id="count")
    objects_out = gr.Image(label="Objects (outlined)", format="png", interactive=False)
    object_metrics_out = gr.Dataframe(
        headers=["DSB score", "AP50", "F1 at 0.5", "PQ", "AJI", "count error"],
        label="Object metrics (a match: IoU > 0.5)", interactive=False, elem_id="object-metrics",
    )  # fmt: skip
    table_out = gr.Dataframe(
        headers=list(OBJECT_HEADERS), label="Objects (largest first; all in the CSV)",
        interactive=False, elem_id="objects-table", max_height=320,
    )  # fmt: skip
    files_out = gr.File(
        label="Label image (16-bit, opens in napari, Fiji, QuPath) and object table (CSV)",
        file_count="multiple", elem_id="object-files",
    )  # fmt: skip
    return [target_out, pred_out, error_out, slider_out, metrics_out, mask_out, note_out,
            count_out, objects_out, object_metrics_out, table_out, files_out]  # fmt: skip


def paint_panel() -> SimpleNamespace:
    """The editor to paint a target or correct a prediction, and its buttons."""
    gr.Markdown(
        "No mask file? Load the image, paint the target (brush, eraser, undo), and use "
        "it: the metrics and views follow. Or load the prediction, fix it, and download "
        "the corrected mask: a PNG at the image's size, ready as a training target."
    )
    ui = SimpleNamespace()
    ui.editor = checked_editor(
        type="numpy", image_mode="RGBA", label="Drawing", sources=(),
        brush=gr.Brush(colors=[_hex(c) for c in CLASS_COLOURS],
                       default_color=_hex(CLASS_COLOURS[0]), color_mode="fixed"),
        eraser=gr.Eraser(), layers=False,
    )  # fmt: skip
    ui.editor_source = gr.State()  # the image the drawing belongs to
    with gr.Row():
        ui.load_image = gr.Button("Load the image")
        ui.load_prediction = gr.Button("Load the prediction to correct")
        ui.use_drawing = gr.Button("Use the drawing as the target", variant="primary")
    ui.drawn_mask = gr.File(label="Drawn or corrected mask (PNG, full resolution)")
    return ui


def segment_tab(demo: gr.Blocks, session: gr.State) -> SimpleNamespace:
    """The Segment tab: its components, and the events that join them to the handlers; its
    inputs (the model's dropdown, the image, the target), for the other tabs. `session` is the
    visitor's teaching session: their fine-tuned models are found there alone."""
    with gr.Row():
        with gr.Column(scale=1):
            ui = segment_inputs()
        with gr.Column(scale=2):
            views = segment_outputs()
    with gr.Accordion("Paint the target, or correct the prediction", open=False):
        paint = paint_panel()
    state = gr.State(time_to_live=1800)  # a visitor's last prediction, for the threshold
    inputs = [ui.model_choice, ui.image_in, ui.image_file, ui.mask_in, ui.threshold, ui.frame,
              session]  # fmt: skip
    private = {"api_visibility": "private"}
    ui.run.click(segment, inputs, [*views, state], api_name="segment")
    paint.load_image.click(
        edit_target, [ui.image_in, ui.image_file], [paint.editor, paint.editor_source], **private
    )
    paint.load_prediction.click(
        edit_prediction, [state, ui.threshold, ui.image_in, ui.image_file],
        [paint.editor, paint.editor_source], **private,
    )  # fmt: skip
    paint.use_drawing.click(
        drawing_to_mask,
        [paint.editor, paint.editor_source, ui.model_choice, ui.image_in, ui.image_file,
         session],
        [ui.mask_in, paint.drawn_mask], **private,
    ).success(segment, inputs, [*views, state], **private)  # fmt: skip
    # A new threshold redraws the views from the kept probabilities: no model run.
    ui.threshold.release(redraw, [state, ui.threshold], views, **private)
    chosen = [ui.model_choice, session]
    ui.model_choice.change(saved_threshold, chosen, ui.threshold, **private)
    ui.model_choice.change(model_card, chosen, ui.card, **private)
    demo.load(model_card, ui.model_choice, ui.card, **private)
    gr.Examples(
        EXAMPLES, inputs=[ui.image_in, ui.mask_in, ui.model_choice], outputs=[*views, state],
        fn=segment_example, run_on_click=True, cache_examples=False, label="Examples (click one)",
    )  # fmt: skip
    return ui


def compare_tab(session: gr.State) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Compare tab; it opens on the report's comparison: a report model against a U-Net of
    its data set."""
    ends = (next(iter(CHOICES), None), next(reversed(CHOICES), None))
    a, b, image, mask = COMPARISONS[0] if COMPARISONS else (*ends, None, None)
    with gr.Row():
        choice_a = gr.Dropdown(ENTRIES, value=a, label="A", allow_custom_value=True)
        choice_b = gr.Dropdown(ENTRIES, value=b, label="B", allow_custom_value=True)
    with gr.Row():
        compare_image = gr.Image(image, type="filepath", label="Image", format="png",
                                 image_mode=None)  # fmt: skip
        compare_mask = gr.File(mask, label="Target mask (optional)", type="filepath")
    compare_threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold")
    compare_run = gr.Button("Compare", variant="primary")
    with gr.Row():
        out_a = gr.Image(label="Model A", format="png", interactive=False)
        out_b = gr.Image(label="Model B", format="png", interactive=False)
    compare_table = gr.Dataframe(headers=["model", "class", *METRIC_NAMES], label="Metrics")
    compare_inputs = [choice_a, choice_b, compare_image, compare_mask, compare_threshold]
    compare_outputs = [out_a, out_b, compare_table]
    compare_run.click(compare, [*compare_inputs, session], compare_outputs, api_name="compare")
    if COMPARISONS:
        gr.Examples(
            COMPARISONS, inputs=compare_inputs[:4], outputs=compare_outputs, fn=compare,
            run_on_click=True, cache_examples=False,
            label="The report's models against a U-Net (click one)",
        )  # fmt: skip
    return choice_a, choice_b


def predict_endpoint() -> None:
    """`/predict`, the scripts' endpoint: hidden components, no part of the page."""
    with gr.Row(visible=False):
        choice = gr.Textbox(label="model")
        image = gr.File(label="image", type="filepath")
        threshold = gr.Number(None, label="threshold")
        frame = gr.Number(0, label="frame")
        mask = gr.File(label="mask")
        record = gr.JSON(label="record")
        run = gr.Button()
    run.click(predict, [choice, image, threshold, frame], [mask, record], api_name="predict")


def session_of(session: finetune.Session | None) -> finetune.Session:
    """The visitor's fine-tuning session, made on first use."""
    return session or finetune.Session.new(sessions_dir())


def kept_rows(session: finetune.Session) -> tuple:
    """The list of kept pairs, the choices of the drop menu, and a line saying how many."""
    count = len(session.pairs)
    held = "; one is held back to score the result" if count >= finetune.VALIDATE_FROM else ""
    note = f"{count} pair{'s' * (count != 1)} kept{held}."
    return (
        [[name] for name in session.pairs],
        gr.update(choices=session.pairs, value=None),
        note,
    )


def keep_pair(session, image_path: str | None, image_file: str | None, mask_file: str | None):
    """Keep the Segment tab's image with its target (uploaded, painted or corrected)."""
    if not mask_file:
        raise gr.Error("Give the image its target first: upload a mask, or paint or correct one.")
    session = session_of(session)
    name = read_inputs(image_path, image_file)[1]
    try:
        session.keep(image_file or image_path, mask_file, name)
    except DataError as error:
        raise gr.Error(str(error)) from None
    return session, *kept_rows(session)


def add_pairs(session, files: list[str] | None):
    """Keep uploaded pairs: a zip laid out as a folder: data set, or images with their masks
    named NAME_mask.png."""
    session = session_of(session)
    paths = [Path(f) for f in files or []]
    masks = {p.stem.removesuffix("_mask"): p for p in paths if p.stem.endswith("_mask")}
    try:
        for path in paths:
            if path.suffix.lower() == ".zip":
                session.import_zip(str(path))
            elif not path.stem.endswith("_mask"):
                if path.stem not in masks:
                    raise DataError(f"{path.name}: no mask {path.stem}_mask.png among the files")
                session.keep(str(path), str(masks[path.stem]), path.stem)
    except (DataError, OSError, ValueError) as error:
        raise gr.Error(str(error)) from None
    return session, *kept_rows(session)


def drop_pair(session, name: str | None):
    if session is None or not name:
        raise gr.Error("Pick a kept pair to drop.")
    session.drop(name)
    return session, *kept_rows(session)


def run_finetune(
    session,
    choice: str,
    request: gr.Request,
    progress=gr.Progress(),  # noqa: B008 (Gradio's way to report progress)
):
    """Fine-tune the chosen model on the kept pairs; it joins this visitor's dropdowns, and
    the Compare tab opens on it against the model it started from. The base is loaded through
    the model shelf's guards (a typed id: from the Hub only, with no token, under the parameter
    limit); the fine-tune runs in a child process (`demo.finetune`)."""
    session = session_of(session)
    base = served_model(choice, session).model
    client = request.client.host if request and request.client else ""
    try:
        token, label = session.finetune(
            base.pretrained_folder, session.labels.get(choice, choice), client=client,
            progress=lambda done: progress(done, desc="fine-tuning"),
        )  # fmt: skip
    except DataError as error:
        raise gr.Error(str(error)) from None
    dice = session.validation_dice(token)
    entries = [*ENTRIES, *((name, key) for key, name in session.labels.items())]
    figure = f" Validation Dice on the pair held back: {dice:.3f}." if dice is not None else ""
    note = f"**{label}** is ready in the model menus, and in Compare against {choice}.{figure}"
    chosen = gr.update(choices=entries, value=token)
    return session, note, chosen, chosen, gr.update(choices=entries, value=choice), \
        str(session.export(token))  # fmt: skip


def push_finetuned(session, choice: str, repo_id: str, token: str) -> str:
    """Push the chosen fine-tuned model to the Hub with the visitor's token, used for this
    request only (never stored or logged); without one, nothing is pushed (the server's own
    token is never used for a visitor)."""
    from trainers.hub.push import push_run

    if session is None or choice not in session.models:
        raise gr.Error("Pick one of your fine-tuned models in the Segment tab's menu first.")
    if not (token or "").strip():
        raise gr.Error("Paste your own Hub token (with write access): the push uses yours.")
    try:
        repo_id = check_repo_id((repo_id or "").strip())
    except ValueError as error:
        raise gr.Error(str(error)) from None
    try:
        url = push_run(session.models[choice], repo_id, token=token.strip())
    except Exception as error:  # the Hub's refusal, a bad token: said, the token never shown
        raise gr.Error(f"The push failed: {type(error).__name__}") from None
    return f"Published: {url}"


def teach_tab(
    ui: SimpleNamespace, compared: tuple[gr.Dropdown, gr.Dropdown], session: gr.State
) -> None:
    """Keep corrected images, fine-tune the chosen model on them, take it home."""
    gr.Markdown(
        f"Keep images with their targets (from the Segment tab, or uploaded here), then "
        f"fine-tune the model chosen there on them for {finetune.SECONDS:g} s. The result is "
        "yours alone: it joins your model menus, and is deleted with your session."
    )
    keep = gr.Button("Keep the Segment tab's image and target for fine-tuning")
    uploads = gr.File(label="Or upload pairs: NAME.png with NAME_mask.png, or a zip "
                      "(images/, masks/)", file_count="multiple", type="filepath",
                      elem_id="uploads")  # fmt: skip
    add = gr.Button("Keep the uploaded pairs")
    kept = gr.Dataframe(headers=["kept pairs"], interactive=False, elem_id="kept")
    kept_note = gr.Markdown("No pair kept yet.", elem_id="kept-note")
    with gr.Row():
        to_drop = gr.Dropdown([], label="Pair to drop")
        drop = gr.Button("Drop it")
    tune = gr.Button("Fine-tune the chosen model on the kept pairs", variant="primary")
    done = gr.Markdown(elem_id="finetuned")
    model_zip = gr.File(label="The fine-tuned model (a run folder, zipped)")
    with gr.Row():
        repo = gr.Textbox(label="Hub repo OWNER/NAME")
        hub_token = gr.Textbox(label="Your Hub token (used once, never kept)", type="password")
        push = gr.Button("Push to the Hub")
    pushed = gr.Markdown()
    private = {"api_visibility": "private"}
    listed = [session, kept, to_drop, kept_note]
    keep.click(keep_pair, [session, ui.image_in, ui.image_file, ui.mask_in], listed, **private)
    add.click(add_pairs, [session, uploads], listed, **private)
    drop.click(drop_pair, [session, to_drop], listed, **private)
    tune.click(run_finetune, [session, ui.model_choice],
               [session, done, ui.model_choice, compared[0], compared[1], model_zip],
               concurrency_limit=finetune.QUEUE.waiting, concurrency_id="finetune",
               **private)  # fmt: skip
    push.click(push_finetuned, [session, ui.model_choice, repo, hub_token], pushed, **private)


def end_session(session: finetune.Session | None) -> None:
    if session is not None:
        session.end()


def build_page() -> gr.Blocks:
    """The page: the Segment and Compare tabs, built once at import (a Space finds `demo`)."""
    # Gradio's copies of uploads and answers: checked every 10 minutes, deleted after an hour.
    with gr.Blocks(title="bioseg: segmentation in the browser", delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# bioseg\nUpload a scan or micrograph, pick a model, and compare its prediction with "
            "the target. DICOM, TIFF stacks and 16-bit images: use *Image file*, which reads them "
            "on the server (pick the frame, page or plane below it)."
        )
        # A visitor's teaching session: their pairs and models, deleted an hour after its last
        # change or when they leave (the folder with it).
        session = gr.State(None, time_to_live=3600, delete_callback=end_session)
        with gr.Tab("Segment"):
            ui = segment_tab(demo, session)
        with gr.Tab("Compare two models"):
            compared = compare_tab(session)
        with gr.Tab("Teach it your images"):
            teach_tab(ui, compared, session)
        predict_endpoint()
    return demo


demo = build_page()
demo.queue(default_concurrency_limit=2, max_size=64)


def main() -> None:
    for location in list(CHOICES.values())[:1]:
        try:  # the default model is ready before the first visitor
            load_model(location)
        except Exception as error:  # e.g. a Hub model while offline: the page still starts
            LOG.warning("the default model %s is not loaded yet: %s", location, error)
    demo.launch(server_name=ARGS.host, server_port=ARGS.port, max_file_size="64mb")


if __name__ == "__main__":
    main()
