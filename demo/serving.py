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

from trainers.scores.scoring import TILES, predict_probabilities, tile_for
from zoo import SegmentationModel, engine_predict, forward_input, from_pretrained

LOG = logging.getLogger("bioseg.serving")
# After forward passes larger than this, the engine gives back the memory grown for them.
USUAL_PIXELS = 512 * 512
# One forward pass at a time in the process, whichever the model: each engine already uses every
# thread it is given, and two at once on the same cores only slow each other down, while the
# other request's reading, drawing and PNG writing can go on beside the one forward.
_FORWARD = threading.Lock()


@dataclass(frozen=True)
class Served:
    """A loaded model and the inference engine that runs it: `forward` takes a normalized batch
    (as `model.predict_normalized` does), one forward pass in the process at a time; `predict`
    takes a batch in [0, 1] and makes it the model's input (`zoo.forward_input`: its channels,
    its saved mean and std); `release` gives back the engine's working memory grown for an
    input larger than the usual."""

    model: SegmentationModel
    forward: Callable[[torch.Tensor], torch.Tensor]
    release: Callable[[], None]
    engine: str

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a batch N x C x *spatial in [0, 1], through the engine."""
        return forward_input(self.model, batch, self.forward)


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
    x = None if image is None else channels_first(image)[None]
    runner, used = engine_predict(model, engine, sample=x, cache=cache)
    LOG.info("%s: served by %s", location, used)

    def forward(normalized: torch.Tensor) -> torch.Tensor:
        with _FORWARD:
            return runner(normalized)

    return Served(model, forward, runner.release, used)


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


def channels_first(image: np.ndarray) -> torch.Tensor:
    """An H x W x C image as a C x H x W tensor: a view, no copy (its channels are matched to
    the model's, and it is normalized, a tile at a time by `zoo.forward_input`)."""
    return torch.from_numpy(image).permute(2, 0, 1)


def predict_image(
    served: Served,
    image: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    tiles: tuple[int, ...] = TILES,
) -> np.ndarray:
    """Class probabilities K x H x W as float16 for an H x W x C image in [0, 1], at the
    image's size, by the project's one predict path
    (`trainers.scores.scoring.predict_probabilities`) through the served engine: tiles made
    the model's input (`zoo.forward_input`) one at a time as they are cut, `progress(done,
    total)` told after each. After forward passes larger than 512x512 the engine's memory grown
    for them is given back, so that a server's resident memory stays that of the usual request
    between larger ones."""
    probabilities = predict_probabilities(
        served.model, channels_first(image), forward=served.forward, tiles=tiles, progress=progress
    )
    height, width = (max(1, round(side * served.model.scale)) for side in image.shape[:2])
    tile = tile_for(height, width, tiles)
    if min(tile, height) * min(tile, width) > USUAL_PIXELS:
        served.release()
    return probabilities.astype(np.float16)
