"""The Segment and Compare tabs' handlers and the scripts' `/predict`: an upload read on the
server, the chosen model run on it (`demo.serving`), and the views drawn (`demo.views.render`).

A Segment click goes: `Segmenter.segment` -> `read_inputs` (the file, under the pixel limit)
-> `run_model` (`Models.served`, then `demo.serving.predict_image`, tile by tile) ->
`render` -> the views by name (`demo.views.VIEWS`), plus the kept prediction (`"kept"`), from
which a new threshold redraws them with no model run (`Segmenter.redraw`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

import zoo
from demo import api, finetune
from demo.models import Models
from demo.overlays import display_rgb, overlay
from demo.serving import Served, predict_image
from demo.views import (
    Prediction,
    answer_folder,
    class_names,
    labels_of,
    metric_rows,
    read_target,
    render,
    target_objects,
    write_png,
)
from trainers.data.medical import Decoded
from trainers.data.readers import DataError, read_decoded
from trainers.scores.scoring import checked_threshold

LOG = logging.getLogger("bioseg.app")


class Segmenter:
    """The handlers that run a model on an upload; `models` finds and loads the chosen one, and
    no image above `max_pixels` is decoded."""

    def __init__(self, models: Models, max_pixels: int) -> None:
        self.models, self.max_pixels = models, max_pixels

    def read_inputs(
        self, image_path: str | None, image_file: str | None, frame: float | None = 0
    ) -> tuple[Decoded, str]:
        """The uploaded image (its frame, page or plane `frame`), and a name for its files."""
        path = image_file or image_path
        if not path:
            raise gr.Error("Upload an image (or pick an example) first.")
        try:
            decoded = read_decoded(path, index=frame_index(frame), max_pixels=self.max_pixels)
        except DataError as error:
            raise gr.Error(str(error)) from None
        # The name labels the output files; it never chooses a folder.
        return decoded, re.sub(r"[^\w.-]", "_", Path(path).stem)[:40].lstrip(".") or "image"

    def predict(
        self,
        choice: str,
        image_file: str | None,
        threshold: float | None = None,
        frame: float | None = 0,
    ) -> tuple[str, dict]:
        """For scripts (`/predict`): the mask file (an object model's: its label image) and what
        it holds: the model's name, the threshold used (None: the model's saved one), the
        classes, the image's size; for an object model its count and object table
        (`demo.api.answer`)."""
        threshold = None if threshold is None else visitor_threshold(threshold)
        decoded, name = self.read_inputs(None, image_file, frame)
        served = self.models.served(choice)
        probabilities = predicted(served, decoded.pixels, name)
        return api.answer(
            served.model,
            decoded.pixels,
            probabilities,
            name,
            threshold,
            choice,
            answer_folder(name),
        )

    def run_model(
        self,
        choice: str,
        decoded: Decoded,
        name: str,
        mask_file: str | None,
        progress: gr.Progress | None = None,
        session: finetune.Session | None = None,
    ) -> tuple[Prediction, str]:
        """The chosen model's prediction for the image, and a message if the target was not
        used."""
        image = decoded.pixels
        served = self.models.served(choice, session)
        probabilities = predicted(served, image, name, progress)
        model, target, message = served.model, None, ""
        if mask_file:
            try:
                binary = model.num_classes == 1 or bool(model.pretrained_config.get("objects"))
                target = read_target(mask_file, image.shape[:2], binary, self.max_pixels)
            except DataError as error:
                message = f"**Target not used:** {error}"
                gr.Warning(str(error))
        about = dataclasses.replace(decoded, pixels=np.empty((0, 0, 1), np.float32))
        prediction = Prediction(
            display_rgb(image),
            probabilities,
            target,
            class_names(model),
            name,
            about,
            intensity=image.mean(axis=2, dtype=np.float32).astype(np.float16),
            object_target=bool(model.pretrained_config.get("objects")),
            target_objects=None if target is None else target_objects(mask_file, target),
        )
        return prediction, message

    def segment(
        self,
        choice: str,
        image_path: str | None,
        image_file: str | None,
        mask_file: str | None,
        threshold: float,
        frame: float | None = 0,
        session: finetune.Session | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to report progress)
    ) -> dict[str, Any]:
        """Run the model on the image: the views by name (`render`'s), and the prediction kept
        for a new threshold (`"kept"`)."""
        threshold = visitor_threshold(threshold)
        decoded, name = self.read_inputs(image_path, image_file, frame)
        prediction, message = self.run_model(choice, decoded, name, mask_file, progress, session)
        del decoded  # the float image is not needed for the views: freed before they are drawn
        return shown(render(prediction, threshold), message) | {"kept": prediction}

    def redraw(self, prediction: Prediction | None, threshold: float) -> dict[str, Any]:
        """The views at a new threshold, from the kept prediction: no model run."""
        return shown(render(prediction, visitor_threshold(threshold)))

    def segment_example(self, image_path: str, mask_file: str | None, choice: str):
        """An example's row (image, target, model) segmented at the model's saved threshold."""
        threshold = self.models.saved_threshold(choice)
        return self.segment(choice, image_path, None, mask_file, threshold)

    def compare(
        self,
        choice_a: str,
        choice_b: str,
        image_path: str | None,
        mask_file: str | None,
        threshold: float = 0.5,
        session: finetune.Session | None = None,
    ) -> dict[str, Any]:
        """Two models on the same image, side by side (`"a"`, `"b"`), with their `"metrics"`."""
        decoded, name = self.read_inputs(image_path, None)
        folder, outputs, rows = answer_folder(name), {}, []
        for side, choice in zip("ab", (choice_a, choice_b), strict=True):
            prediction, _ = self.run_model(choice, decoded, name, mask_file, session=session)
            labels = labels_of(prediction, threshold)
            # An object model's labels are its foreground: scored as one class, as render does.
            classes = prediction.classes[:2] if prediction.object_target else prediction.classes
            view = overlay(prediction.rgb, labels)
            outputs[side] = write_png(view, folder / f"prediction_{side}.png")
            if prediction.target is not None:
                rows += [[choice, *row] for row in metric_rows(labels, prediction.target, classes)]
        return outputs | {"metrics": rows}


def shown(views: dict[str, Any], message: str = "") -> dict[str, Any]:
    """`render`'s views, with `message` under the note."""
    if message:
        return views | {"note": f"{views['note']}<br>{message}"}
    return views


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


def predicted(
    served: Served, image: np.ndarray, name: str, progress: gr.Progress | None = None
) -> np.ndarray:
    """The served model's class probabilities for the image; a message naming the image when
    the model cannot run on it."""
    try:
        return predict_image(served, image, tile_progress(progress))
    except (ValueError, zoo.ModelBuildError) as error:  # a too small image, a broken plugin
        raise gr.Error(f"{name}: {error}") from None
    except Exception as error:  # out of memory, a fault in a plugin's forward
        LOG.exception("model %s failed on %s", served.model.spec.name, name)
        raise gr.Error(f"{name}: the model failed ({type(error).__name__}: {error})") from None


def tile_progress(progress: gr.Progress | None) -> Callable[[int, int], None] | None:
    """Gradio's progress bar, told of each tile done."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((done, total), desc="tiles")

    return report
