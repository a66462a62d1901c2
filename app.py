"""bioseg web demo: upload a scan or micrograph, pick a model, see target and prediction.

    python app.py                             # offline, on the bundled weights and examples
    python app.py --weights OWNER/NAME        # also offer published weights from the Hub
    BIOSEG_WEIGHTS=OWNER/NAME python app.py   # the same, as a Hugging Face Space setting
    gradio app.py                             # hot reload while editing

The page's layout, and the events that join it to the handlers in demo/ (docs/rooms.md);
its settings come from environment variables (`demo.settings`), and main()'s flags.
"""

from __future__ import annotations

import gradio as gr

from demo import finetune
from demo.editor import Editor, brush, checked_editor
from demo.models import Models
from demo.objects import HEADERS as OBJECT_HEADERS
from demo.overlays import CLASS_COLOURS
from demo.segment import Segmenter
from demo.settings import parse_flags, settings_from_environment
from demo.teach import Teacher, end_session
from demo.views import METRIC_NAMES, VIEWS
from demo.volumes import AUTO, AXES, TABLE, WINDOWS, Volumes, moved, view_files
from demo.wiring import PRIVATE, named
from trainers.data.readers import set_pixel_limit

IMAGE = {"type": "filepath", "format": "png", "image_mode": None}  # an image input, as uploaded
CLICKED = {"run_on_click": True, "cache_examples": False}  # an example runs when clicked


def segment_inputs(models: Models) -> dict[str, gr.Component]:
    """The Segment tab's left column: the model and its card, the image, its target, the
    threshold and the button."""
    ui = {}
    ui["model"] = gr.Dropdown(
        models.catalogue.entries,
        value=models.catalogue.default,
        label="Model (or type a Hub id OWNER/NAME)",
        allow_custom_value=True,
    )
    ui["card"] = gr.Markdown()  # what the model is for; filled on load and on change
    ui["image"] = gr.Image(label="Image", sources=["upload", "clipboard"], **IMAGE)
    about = "Image file (DICOM, TIFF and OME-TIFF, 16-bit PNG...)"
    ui["image_file"] = gr.File(label=about, type="filepath", elem_id="image-file")
    about = "Frame, page or plane (DICOM, TIFF stacks)"
    ui["frame"] = gr.Number(0, minimum=0, step=1, elem_id="frame", label=about)
    ui["mask"] = gr.File(label="Target mask (optional)", type="filepath", elem_id="mask-file")
    ui["threshold"] = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold")
    ui["run"] = gr.Button("Segment", variant="primary")
    return ui


def results(headers: list[str], label: str, elem_id: str) -> gr.Dataframe:
    """A read-only table of results, at most 320 pixels high."""
    return gr.Dataframe(
        headers=headers, label=label, interactive=False, elem_id=elem_id, max_height=320
    )


def segment_outputs() -> dict[str, gr.Component]:
    """The Segment tab's right column: its views, by name (VIEWS)."""
    image = {"format": "png", "interactive": False}
    views = {}
    with gr.Row():
        views["target"] = gr.Image(label="Target", **image)
        views["prediction"] = gr.Image(label="Prediction", **image)
    views["note"] = gr.Markdown(elem_id="note")
    views["metrics"] = results(["class", *METRIC_NAMES], "Metrics", "metrics")
    with gr.Row():
        views["errors"] = gr.Image(label="Error map", **image)
        views["slider"] = gr.ImageSlider(label="Image | prediction", format="png")
    views["mask"] = gr.File(label="Predicted mask (PNG, full resolution)")
    views["count"] = gr.Markdown(elem_id="count")
    views["objects"] = gr.Image(label="Objects (outlined)", **image)
    scores = ["DSB score", "AP50", "F1 at 0.5", "PQ", "AJI", "count error"]
    about = "Object metrics (a match: IoU > 0.5)"
    views["object_metrics"] = results(scores, about, "object-metrics")
    about = "Objects (largest first; all in the CSV)"
    views["table"] = results(list(OBJECT_HEADERS), about, "objects-table")
    label = "Label image (16-bit, opens in napari, Fiji, QuPath) and object table (CSV)"
    views["object_files"] = gr.File(label=label, file_count="multiple", elem_id="object-files")
    return {name: views[name] for name in VIEWS}  # the order of the API's outputs


def paint_panel(max_pixels: int) -> dict[str, gr.Component]:
    """The editor to paint a target or correct a prediction, and its buttons."""
    gr.Markdown(
        "No mask file? Load the image, paint the target (brush, eraser, undo), and use "
        "it: the metrics and views follow. Or load the prediction, fix it, and download "
        "the corrected mask: a PNG at the image's size, ready as a training target."
    )
    ui = {}
    ui["drawing"] = checked_editor(
        max_pixels,
        type="numpy",
        image_mode="RGBA",
        label="Drawing",
        sources=(),
        brush=gr.Brush(
            colors=[brush(c) for c in CLASS_COLOURS],
            default_color=brush(CLASS_COLOURS[0]),
            color_mode="fixed",
        ),
        eraser=gr.Eraser(),
        layers=False,
    )
    ui["source"] = gr.State()  # the image the drawing belongs to
    with gr.Row():
        ui["load_image"] = gr.Button("Load the image")
        ui["load_prediction"] = gr.Button("Load the prediction to correct")
        ui["use_drawing"] = gr.Button("Use the drawing as the target", variant="primary")
    ui["download"] = gr.File(label="Drawn or corrected mask (PNG, full resolution)")
    return ui


def segment_tab(page: gr.Blocks, session: gr.State, segmenter: Segmenter) -> dict:
    """The Segment tab and its events; its inputs (the model's dropdown, the image, the target)
    for the other tabs. `session` is the visitor's: their fine-tuned models are found there."""
    models, editor = segmenter.models, Editor(segmenter)
    examples = gr.Column()  # filled below, once its outputs exist: on the first screen
    with gr.Row():
        with gr.Column(scale=1):
            ui = segment_inputs(models)
        with gr.Column(scale=2):
            views = segment_outputs()
    with gr.Accordion("Paint the target, or correct the prediction", open=False):
        paint = paint_panel(models.settings.max_pixels)
    kept = gr.State(time_to_live=1800)  # a visitor's last prediction, for the threshold
    shown = {**views, "kept": kept}
    inputs = [ui[k] for k in ("model", "image", "image_file", "mask", "threshold", "frame")]
    image = [ui["image"], ui["image_file"]]
    segment = named(segmenter.segment, shown)
    ui["run"].click(segment, [*inputs, session], list(shown.values()), api_name="segment")
    loaded = {"drawing": paint["drawing"], "source": paint["source"]}
    to_editor = list(loaded.values())
    paint["load_image"].click(named(editor.edit_target, loaded), image, to_editor, **PRIVATE)
    correct = named(editor.edit_prediction, loaded)
    paint["load_prediction"].click(correct, [kept, ui["threshold"], *image], to_editor, **PRIVATE)
    drawn = {"target": ui["mask"], "download": paint["download"]}
    paint["use_drawing"].click(
        named(editor.drawing_to_mask, drawn),
        [paint["drawing"], paint["source"], ui["model"], *image, session],
        list(drawn.values()),
        **PRIVATE,
    ).success(segment, [*inputs, session], list(shown.values()), **PRIVATE)
    # A new threshold redraws the views from the kept probabilities: no model run.
    redraw = named(segmenter.redraw, views)
    ui["threshold"].release(redraw, [kept, ui["threshold"]], list(views.values()), **PRIVATE)
    chosen = [ui["model"], session]
    ui["model"].change(models.saved_threshold, chosen, ui["threshold"], **PRIVATE)
    ui["model"].change(models.card_markdown, chosen, ui["card"], **PRIVATE)
    page.load(models.card_markdown, ui["model"], ui["card"], **PRIVATE)
    with examples:
        gr.Examples(
            models.catalogue.examples,
            inputs=[ui["image"], ui["mask"], ui["model"]],
            outputs=list(shown.values()),
            fn=named(segmenter.segment_example, shown),
            **CLICKED,
            label="Examples (click one)",
        )
    return ui


def compare_tab(session: gr.State, segmenter: Segmenter) -> dict[str, gr.Dropdown]:
    """The Compare tab; it opens on the report's comparison: a report model against a U-Net of
    its data set."""
    catalogue, comparisons = segmenter.models.catalogue, segmenter.models.catalogue.comparisons
    ends = (catalogue.default, next(reversed(catalogue.choices), None))
    a, b, image, mask = comparisons[0] if comparisons else (*ends, None, None)
    with gr.Row():
        choice_a = gr.Dropdown(catalogue.entries, value=a, label="A", allow_custom_value=True)
        choice_b = gr.Dropdown(catalogue.entries, value=b, label="B", allow_custom_value=True)
    with gr.Row():
        compare_image = gr.Image(image, label="Image", **IMAGE)
        compare_mask = gr.File(mask, label="Target mask (optional)", type="filepath")
    threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold")
    run = gr.Button("Compare", variant="primary")
    with gr.Row():
        out_a = gr.Image(label="Model A", format="png", interactive=False)
        out_b = gr.Image(label="Model B", format="png", interactive=False)
    table = gr.Dataframe(headers=["model", "class", *METRIC_NAMES], label="Metrics")
    inputs = [choice_a, choice_b, compare_image, compare_mask, threshold]
    outputs = {"a": out_a, "b": out_b, "metrics": table}
    compare = named(segmenter.compare, outputs)
    run.click(compare, [*inputs, session], list(outputs.values()), api_name="compare")
    if comparisons:
        gr.Examples(
            comparisons,
            inputs=inputs[:4],
            outputs=list(outputs.values()),
            fn=compare,
            **CLICKED,
            label="The report's models against a U-Net (click one)",
        )
    return {"compare_a": choice_a, "compare_b": choice_b}


def volume_tab(volumes: Volumes) -> None:
    """A CT or MRI volume and its target, segmented, scored and viewed slice by slice."""
    choices = list(volumes.choices)
    examples = gr.Column()  # filled below, once its outputs exist: on the first screen
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(
                choices, value=choices[0] if choices else None, label="Volume model"
            )
            card = gr.Markdown(volumes.card(choices[0] if choices else None))
            about = "Volume: NIfTI (.nii, .nii.gz), NRRD, MHA, or a zip of a DICOM series"
            volume = gr.File(label=about, type="filepath", elem_id="volume-file")
            target = gr.File(
                label="Target label volume (optional)", type="filepath", elem_id="volume-target"
            )
            series = gr.Textbox(label="DICOM series UID (where the zip holds several)")
            run = gr.Button("Segment the volume", variant="primary")
            note = gr.Markdown(elem_id="volume-note")
        with gr.Column(scale=2):
            with gr.Row():
                axis = gr.Radio(list(AXES), value="axial", label="Axis", elem_id="volume-axis")
                window = gr.Dropdown(
                    [AUTO, *WINDOWS], value=AUTO, label="Window", elem_id="volume-window"
                )
            index = gr.Slider(0, 1, value=0, step=1, label="Slice", elem_id="volume-slice")
            image = {"format": "png", "interactive": False}
            with gr.Row():
                views = [
                    gr.Image(label=name, elem_id=f"volume-{name.split()[0].lower()}", **image)
                    for name in ("Image", "Target", "Prediction", "Error map")
                ]
            table = results(TABLE, "Per class", "volume-metrics")
            plot = gr.Image(label="Dice per slice, along the axis", **image)
            with gr.Row():
                surface = gr.Model3D(label="Prediction in 3D (mm)", elem_id="volume-surface")
                target_surface = gr.Model3D(label="Target in 3D (mm)")
            with gr.Row():
                about = "Label volume (.nii.gz, the input's geometry)"
                label_file = gr.File(label=about, elem_id="volume-labels")
                csv_file = gr.File(label="Per-class table (CSV)", elem_id="volume-csv")
    shown = gr.State(time_to_live=1800)  # the visitor's volume and prediction, for redraws
    outputs = [shown, note, table, label_file, csv_file, surface, target_surface, window]
    outputs += [index, plot, *views]
    inputs = [model, volume, target, series, axis]
    run.click(volumes.run, inputs, outputs, api_name="segment_volume", show_progress="minimal")
    if volumes.examples:
        with examples:
            gr.Examples(
                volumes.examples,
                inputs=inputs,
                outputs=outputs,
                fn=volumes.run,
                **CLICKED,
                label="Example: an MRI of the hippocampus with its target (click it)",
            )
    # The slider, the axis and the window redraw from the kept volume: no model run.
    index.change(view_files, [shown, axis, index, window], views, **PRIVATE)
    window.change(view_files, [shown, axis, index, window], views, **PRIVATE)
    axis.change(moved, [shown, axis, window], [index, plot, *views], **PRIVATE)
    model.change(volumes.card, model, card, **PRIVATE)


def predict_endpoint(segmenter: Segmenter, volumes: Volumes) -> None:
    """`/predict`, the scripts' endpoint: an image through an image model (its mask), a volume
    through a volume model (its label volume, `.nii.gz`); hidden components, no part of the
    page."""
    with gr.Row(visible=False):
        choice = gr.Textbox(label="model")
        image = gr.File(label="image", type="filepath")
        threshold = gr.Number(None, label="threshold")
        frame = gr.Number(0, label="frame")
        mask = gr.File(label="mask")
        record = gr.JSON(label="record")
        run = gr.Button()
    inputs = [choice, image, threshold, frame]

    def predict(choice: str, file: str | None, threshold: float | None, frame: float | None):
        if volumes.offers(choice):
            return volumes.predict(choice, file)
        return segmenter.predict(choice, file, threshold, frame)

    run.click(predict, inputs, [mask, record], api_name="predict")


def teach_tab(ui: dict, compared: dict, session: gr.State, teacher: Teacher) -> None:
    """Keep corrected images, fine-tune the chosen model on them, take it home."""
    gr.Markdown(
        f"Keep images with their targets (from the Segment tab, or uploaded here), then "
        f"fine-tune the model chosen there on them for {finetune.SECONDS:g} s. The result is "
        "yours alone: it joins your model menus, and is deleted with your session."
    )
    keep = gr.Button("Keep the Segment tab's image and target for fine-tuning")
    uploads = gr.File(
        label="Or upload pairs: NAME.png with NAME_mask.png, or a zip (images/, masks/)",
        file_count="multiple",
        type="filepath",
        elem_id="uploads",
    )
    add = gr.Button("Keep the uploaded pairs")
    kept = gr.Dataframe(headers=["kept pairs"], interactive=False, elem_id="kept")
    kept_note = gr.Markdown("No pair kept yet.", elem_id="kept-note")
    with gr.Row():
        to_drop = gr.Dropdown([], label="Pair to drop")
        drop = gr.Button("Drop it")
    tune = gr.Button("Fine-tune the chosen model on the kept pairs", variant="primary")
    tuned_note = gr.Markdown(elem_id="finetuned")
    model_zip = gr.File(label="The fine-tuned model (a run folder, zipped)")
    with gr.Row():
        repo = gr.Textbox(label="Hub repo OWNER/NAME")
        hub_token = gr.Textbox(label="Your Hub token (used once, never kept)", type="password")
        push = gr.Button("Push to the Hub")
    pushed = gr.Markdown()
    listed = {"session": session, "kept": kept, "to_drop": to_drop, "kept_note": kept_note}
    pairs = [session, ui["image"], ui["image_file"], ui["mask"]]
    for button, handler, inputs in (
        (keep, teacher.keep_pair, pairs),
        (add, teacher.add_pairs, [session, uploads]),
        (drop, teacher.drop_pair, [session, to_drop]),
    ):
        button.click(named(handler, listed), inputs, list(listed.values()), **PRIVATE)
    tuned = {"session": session, "tuned_note": tuned_note, "model": ui["model"]}
    tuned |= {**compared, "model_zip": model_zip}
    tune.click(
        named(teacher.run_finetune, tuned),
        [session, ui["model"]],
        list(tuned.values()),
        concurrency_limit=finetune.QUEUE.waiting,
        concurrency_id="finetune",
        **PRIVATE,
    )
    push.click(teacher.push_finetuned, [session, ui["model"], repo, hub_token], pushed, **PRIVATE)


def build_page(models: Models) -> gr.Blocks:
    """The page: the Segment, Compare and Teach tabs, and the scripts' `/predict`."""
    segmenter = Segmenter(models, models.settings.max_pixels)
    # Gradio's copies of uploads and answers: checked every 10 minutes, deleted after an hour.
    with gr.Blocks(title="bioseg: segmentation in the browser", delete_cache=(600, 3600)) as page:
        gr.Markdown(
            "# bioseg\nUpload a scan or micrograph, pick a model, and compare its prediction with "
            "the target. DICOM, TIFF stacks and 16-bit images: use *Image file*, which reads them "
            "on the server (pick the frame, page or plane below it)."
        )
        # A visitor's pairs and models, deleted (folder and all) an hour on, or when they leave.
        session = gr.State(None, time_to_live=3600, delete_callback=end_session)
        with gr.Tab("Segment"):
            ui = segment_tab(page, session, segmenter)
        volumes = Volumes(models.settings)
        with gr.Tab("Volumes (CT, MRI)"):
            volume_tab(volumes)
        with gr.Tab("Compare two models"):
            compared = compare_tab(session, segmenter)
        with gr.Tab("Teach it your images"):
            teach_tab(ui, compared, session, Teacher(segmenter, models.catalogue.entries))
        predict_endpoint(segmenter, volumes)
    return page.queue(default_concurrency_limit=2, max_size=64)


# What a Space and `gradio app.py` find: the page of the environment's settings (no model
# loaded: each is loaded when first asked for, or by main() before the first visitor).
MODELS = Models.of(settings_from_environment())
demo = build_page(MODELS)


def main(argv: list[str] | None = None) -> None:
    """Serve the page; `--weights` or `--engine` rebuild it with those settings."""
    settings, host, port = parse_flags(argv, MODELS.settings)
    models = MODELS if settings == MODELS.settings else Models.of(settings)
    page = demo if models is MODELS else build_page(models)
    set_pixel_limit(settings.max_pixels)  # every reader's, and Pillow's, for the whole server
    models.load_default()  # ready before the first visitor
    page.launch(server_name=host, server_port=port, max_file_size="64mb")


if __name__ == "__main__":
    main()
