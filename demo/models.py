"""The page's models: a dropdown's label, a visitor's own fine-tuned model or a typed Hub id
found and loaded once (through `demo.serving.ModelShelf`'s guards), its saved threshold and
its card.

    models = Models.of(settings)                  # nothing loaded yet
    served = models.served("drive-unet (bundled)")  # loaded on first use, then shared
    models.card_markdown("drive-unet (bundled)")  # what the model is for, how good it is
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import gradio as gr

import zoo
from demo import finetune
from demo.catalogue import Catalogue, held_out_figures, held_out_summary, hub_held_out_summary
from demo.serving import ModelShelf, Served, serve
from demo.settings import Settings
from demo.tasks import data_set_name
from zoo._hub import check_repo_id

LOG = logging.getLogger("bioseg.app")
# What choosing or loading a model raises for a bad choice or bad files (a typed id, a
# missing or broken folder, a Hub failure); anything else is a bug and is not hidden.
LOAD_ERRORS = (gr.Error, OSError, ValueError, zoo.PretrainedWeightsError, zoo.ModelBuildError)


class Models:
    """The catalogue's models, a visitor's fine-tuned ones and typed Hub ids, each loaded once."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings, self.catalogue = settings, catalogue
        self.shelf = ModelShelf(settings.engine, settings.max_parameters, catalogue.example_image)
        self._finetuned = functools.lru_cache(maxsize=4)(self._load_finetuned)

    @classmethod
    def of(cls, settings: Settings) -> Models:
        """The models of `settings`, listed (`Catalogue.of`); none is loaded yet."""
        return cls(settings, Catalogue.of(settings))

    def load(self, location: str, session: finetune.Session | None = None) -> Served:
        """The model at `location`, loaded once and shared (see `demo.serving.ModelShelf`); one
        of the visitor's own fine-tuned models, from its session's folder (the last four kept
        loaded), where `session` holds it."""
        if session is not None and location in {str(p) for p in session.models.values()}:
            return self._finetuned(location)
        return self.shelf.get(location, listed=location in self.catalogue.choices.values())

    def load_default(self) -> None:
        """Load the first listed model, so it is ready before the first visitor; a warning
        (the page still starts) when it cannot be, e.g. a Hub model while offline."""
        for location in list(self.catalogue.choices.values())[:1]:
            try:
                self.load(location)
            except Exception as error:
                LOG.warning("the default model %s is not loaded yet: %s", location, error)

    def _load_finetuned(self, location: str) -> Served:
        """A visitor's model, its exported graph in its own folder (counted in their disk
        budget, deleted with their session)."""
        return serve(location, self.settings.engine, cache=Path(location) / "engine")

    def resolve(self, choice: str | None, session: finetune.Session | None = None) -> str:
        """A dropdown label, one of this visitor's fine-tuned models by its token (found in their
        own session only), or a Hub id typed into the box (never a path on this server)."""
        if not choice:
            raise gr.Error("Pick a model first (no weights are bundled or listed).")
        if choice in self.catalogue.choices:
            return self.catalogue.choices[choice]
        if session is not None and choice in session.models:
            return str(session.models[choice])
        try:
            return check_repo_id(choice.strip())
        except ValueError as error:
            raise gr.Error(f"{error}. Pick a listed model or type a Hub id OWNER/NAME.") from None

    def served(self, choice: str | None, session: finetune.Session | None = None) -> Served:
        """The chosen model, loaded; a message for the visitor (the traceback to the log) when
        it cannot be."""
        location = self.resolve(choice, session)
        try:
            return self.load(location, session)
        except Exception as error:
            LOG.warning("could not load model %s", location, exc_info=True)
            raise gr.Error(f"Could not load model {choice!r}: {error}") from None

    def saved_threshold(self, choice: str | None, session: finetune.Session | None = None) -> float:
        """The threshold saved with the model; 0.5 when it has none or cannot be loaded (the
        Segment button then says why)."""
        try:
            model = self.load(self.resolve(choice, session), session).model
        except LOAD_ERRORS:
            return 0.5
        return float(model.pretrained_config.get("threshold", 0.5))

    def card_markdown(self, choice: str | None, session: finetune.Session | None = None) -> str:
        """What the chosen model is for, in a few lines: data set, input, test figures, size."""
        try:
            location = self.resolve(choice, session)
            model = self.load(location, session).model
        except LOAD_ERRORS as error:  # the Segment button says it in full
            return f"No card: the model could not be loaded ({error})."
        config = model.pretrained_config
        trained_on = data_set_name(config.get("dataset"))
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
        listed = location in self.catalogue.choices.values()
        summary = (
            held_out_summary(Path(location))
            if local
            else hub_held_out_summary(location, token=None if listed else False)
        )
        try:
            lines.append(held_out_figures(summary or {}))
        except (KeyError, TypeError, ValueError, AttributeError):
            where = (
                "beside its weights" if local else "in its Hub repo (pushed with trainers.push?)"
            )
            lines.append(f"No test figures: no readable evaluation summary.json {where}.")
        limits = (
            config.get("limitations") or "images unlike its training data; check it on yours first."
        )
        lines.append(f"Not for: {limits}")
        return "  \n".join(lines)
