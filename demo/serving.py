"""Models served to an app: each loaded once and shared by every request, run by the fastest
inference engine, and large images predicted in tiles without a full-size normalised copy.

    shelf = ModelShelf(engine=None, max_parameters=400_000_000)
    served = shelf.get("/srv/weights/drive-unet", listed=True)
    probabilities = predict_image(served, image)  # H x W x C in [0, 1] -> K x H x W float16
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers.scoring import TILES, predict_probabilities, tile_for
from zoo import SegmentationModel, engine_predict, from_pretrained, match_channels, normalize

LOG = logging.getLogger("bioseg.serving")
# After forward passes larger than this, the engine gives back the memory grown for them.
USUAL_PIXELS = 512 * 512
# One forward pass at a time in the process, whichever the model: each engine already uses every
# thread it is given, and two at once on the same cores only slow each other down, while the
# other request's reading, drawing and PNG writing can go on beside the one forward.
_FORWARD = threading.Lock()


@dataclass(frozen=True)
class Served:
    """A loaded model and its prediction through the inference engine that runs it:
    `predict` takes a batch in [0, 1] and normalizes it as the weights expect (evaluation's
    normalization, the saved mean and std); `release` gives back the engine's working memory
    grown for an input larger than the usual."""

    model: SegmentationModel
    predict: Callable[[torch.Tensor], torch.Tensor]
    release: Callable[[], None]
    engine: str


Sample = Callable[[SegmentationModel], "np.ndarray | None"]
"""An image of the kind a model will see (H x W x C in [0, 1]), or None: for the engine's
choice by measurement (bf16 is taken only where its mask agrees with float32's on it)."""


def serve(
    location: str,
    engine: str | None = None,
    sample: Sample | None = None,
    cache: Path | None = None,
    **load_options: object,
) -> Served:
    """The weights at `location` (a folder or Hub id, `from_pretrained`'s `load_options`), run
    by `engine` (default: `$BIOSEG_ENGINE`, else the fastest measured, on `sample`'s image of
    the model when it gives one), its exported graph kept in `cache` (default: the engines'
    cache). Forward passes of every served model run one at a time."""
    model = from_pretrained(location, **load_options)
    image = sample(model) if sample else None
    x = None
    if image is not None:
        x = normalize(model_input(image, model).float(), model.spec.mean, model.spec.std)
    runner, used = engine_predict(model, engine, sample=x, cache=cache)
    LOG.info("%s: served by %s", location, used)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        normalized = normalize(batch, model.spec.mean, model.spec.std)
        with _FORWARD:
            return runner(normalized)

    return Served(model, predict, runner.release, used)


class ModelShelf:
    """Models loaded (and exported to the engine) once, then shared by every request.

    Listed models stay loaded, each behind its own lock (a slow Hub download holds up no other
    model); a listed Hub id is fetched with the host's token, where it has one. Other Hub ids,
    typed by visitors, share one lock and a cache of two, so they can neither push the listed
    models out nor pile up in memory; they are fetched from the Hub only (never read from local
    files), with no token at all (a visitor never reaches the host's private repos), and
    refused above `max_parameters` before download.
    """

    def __init__(
        self,
        engine: str | None = None,
        max_parameters: int | None = None,
        sample: Sample | None = None,
    ) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._listed_model = functools.cache(self._load_listed)
        self._typed_model = functools.lru_cache(maxsize=2)(self._load_typed)
        self.engine, self.max_parameters, self.sample = engine, max_parameters, sample

    def get(self, location: str, *, listed: bool) -> Served:
        """The served model at `location`: one the app lists (a folder or Hub id), or a Hub id
        a visitor typed."""
        with self._guard:
            lock = self._locks.setdefault(location if listed else "", threading.Lock())
        with lock:
            return self._listed_model(location) if listed else self._typed_model(location)

    def _load_listed(self, location: str) -> Served:
        hub_only = not Path(location).is_absolute()
        return serve(location, self.engine, self.sample, hub_only=hub_only)

    def _load_typed(self, repo_id: str) -> Served:
        return serve(
            repo_id,
            self.engine,
            self.sample,
            hub_only=True,
            max_parameters=self.max_parameters,
            token=False,
        )


def model_input(image: np.ndarray, model: SegmentationModel) -> torch.Tensor:
    """An H x W x C image in [0, 1] as the 1 x C x H x W tensor of the model's channels, not yet
    normalized: a view of the image (grey repeated without a copy, as match_channels does),
    so that tiles are normalized one at a time and no full-size normalized copy is held."""
    channels_first = torch.from_numpy(image).permute(2, 0, 1)
    if channels_first.shape[0] == 1 < model.in_channels:
        channels_first = channels_first.expand(model.in_channels, -1, -1)
    else:
        channels_first = torch.from_numpy(match_channels(image, model.in_channels)).permute(2, 0, 1)
    return channels_first[None]


def predict_image(
    served: Served,
    image: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    tiles: tuple[int, ...] = TILES,
) -> np.ndarray:
    """Class probabilities K x H x W as float16 for an H x W x C image in [0, 1], at the
    image's size, by the project's one predict path (`trainers.scoring.predict_probabilities`)
    through the served engine: tiles normalized one at a time as they are cut, `progress(done,
    total)` told after each. After forward passes larger than 512x512 the engine's memory grown
    for them is given back, so that a server's resident memory stays that of the usual request
    between larger ones."""
    x = model_input(image, served.model)[0]
    probabilities = predict_probabilities(
        served.model, x, forward=served.predict, tiles=tiles, progress=progress
    )
    height, width = (max(1, round(side * served.model.scale)) for side in image.shape[:2])
    tile = tile_for(height, width, tiles)
    if min(tile, height) * min(tile, width) > USUAL_PIXELS:
        served.release()
    return probabilities.astype(np.float16)
