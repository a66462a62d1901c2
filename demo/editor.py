"""The Segment tab's editor: paint a target over the image, or correct the prediction, and use
the drawing as the target (a mask PNG at the image's full size)."""

from __future__ import annotations

import io
from typing import NamedTuple

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

from demo import finetune
from demo.annotation import PAINTED_ALPHA, labels_to_layer, layer_to_labels
from demo.overlays import CLASS_COLOURS, display_rgb
from demo.segment import Segmenter
from demo.views import Prediction, answer_folder, labels_of, write_png
from trainers.data.readers import DataError, check_pixel_count, decoding


class Loaded(NamedTuple):
    """What the editor is given: its `drawing` (the background, and a layer to correct), and
    the `source` image the drawing belongs to."""

    drawing: dict
    source: str | None


class Drawn(NamedTuple):
    """The drawing as a mask file: the `target` for Segment, and a file to `download`."""

    target: str
    download: str


def checked_editor(max_pixels: int, **options) -> gr.ImageEditor:
    """A `gr.ImageEditor` whose payload is checked as an upload is: each image's pixel count is
    read from its header and held to `max_pixels` before it is decoded, and an image that
    cannot be decoded is refused with a message instead of a traceback.

    The check wraps the editor's own decoding step on this instance: a subclass would do the
    same, but Gradio writes a type stub (.pyi) beside the module of every component class.
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
                    check_pixel_count("the drawing", header.size, max_pixels)
                return decode(file, flatten_on_white)
        except DataError as error:
            raise gr.Error(str(error)) from None

    editor.convert_and_format_image = checked_decode
    return editor


def brush(colour: tuple[int, int, int]) -> str:
    """A class colour as the editor's brush takes it: '#rrggbb'."""
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _drawing(background: np.ndarray, layer: np.ndarray | None = None) -> dict:
    return {"background": background, "layers": [] if layer is None else [layer], "composite": None}


class Editor:
    """The editor's handlers; `segmenter` reads the image and finds the chosen model."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def edit_target(self, image_path: str | None, image_file: str | None) -> Loaded:
        """The image into the editor, to paint its target over it."""
        image = self.segmenter.read_inputs(image_path, image_file)[0].pixels
        return Loaded(_drawing(display_rgb(image)), image_file or image_path)

    def edit_prediction(
        self,
        prediction: Prediction | None,
        threshold: float,
        image_path: str | None,
        image_file: str | None,
    ) -> Loaded:
        """The prediction at this threshold into the editor, as a layer to correct."""
        if prediction is None:
            raise gr.Error("Press Segment first: there is no prediction to correct yet.")
        layer = labels_to_layer(labels_of(prediction, threshold), CLASS_COLOURS)
        return Loaded(_drawing(prediction.rgb, layer), image_file or image_path)

    def drawing_to_mask(
        self,
        drawing: dict | None,
        source: str | None,
        choice: str,
        image_path: str | None,
        image_file: str | None,
        session: finetune.Session | None = None,
    ) -> Drawn:
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
        decoded, name = self.segmenter.read_inputs(image_path, image_file)
        image = decoded.pixels
        models = self.segmenter.models
        model = models.load(models.resolve(choice, session), session).model
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
        folder = answer_folder(name)
        mask_file = write_png(mask.astype(np.uint8), folder / f"{name}_drawn_mask.png")
        return Drawn(mask_file, mask_file)
