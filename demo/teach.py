"""The Teach tab's handlers: keep a visitor's image/target pairs, fine-tune the chosen model on
them in a child process (`demo.finetune`), offer the result in their own menus, push it to the
Hub with their own token.

Each handler answers by name: `"session"` (the visitor's `demo.finetune.Session`), `"kept"`,
`"to_drop"` and `"kept_note"` (the list of kept pairs), and after a fine-tune `"tuned_note"`,
`"model"` (the Segment tab's menu), `"compare_a"`, `"compare_b"` and `"model_zip"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from demo import finetune
from demo.segment import Segmenter
from demo.views import sessions_dir
from trainers.data.readers import DataError
from trainers.fit.plan_finetune import FEW_PAIRS, HELD_BACK
from zoo._hub import check_repo_id


def session_of(session: finetune.Session | None) -> finetune.Session:
    """The visitor's fine-tuning session, made on first use."""
    return session or finetune.Session.new(sessions_dir())


def end_session(session: finetune.Session | None) -> None:
    """The session's pairs, models and folder deleted (the visitor left, or it aged)."""
    if session is not None:
        session.end()


def kept_rows(session: finetune.Session) -> dict[str, Any]:
    """The session, the list of its kept pairs, the drop menu's choices, and a line saying how
    many."""
    count = len(session.pairs)
    held = f"; {HELD_BACK:.0%} are held back to score the result" if count >= FEW_PAIRS else ""
    return {
        "session": session,
        "kept": [[name] for name in session.pairs],
        "to_drop": gr.update(choices=session.pairs, value=None),
        "kept_note": f"{count} pair{'s' * (count != 1)} kept{held}.",
    }


class Teacher:
    """The Teach tab's handlers; `segmenter` reads the images and loads the chosen model, and
    `entries` are the model menus' entries before a visitor's own are added."""

    def __init__(self, segmenter: Segmenter, entries: list[tuple[str, str]]) -> None:
        self.segmenter, self.entries = segmenter, entries

    def keep_pair(
        self,
        session: finetune.Session | None,
        image_path: str | None,
        image_file: str | None,
        mask_file: str | None,
    ) -> dict[str, Any]:
        """Keep the Segment tab's image with its target (uploaded, painted or corrected)."""
        if not mask_file:
            raise gr.Error(
                "Give the image its target first: upload a mask, or paint or correct one."
            )
        session = session_of(session)
        name = self.segmenter.read_inputs(image_path, image_file)[1]
        try:
            session.keep(image_file or image_path, mask_file, name)
        except DataError as error:
            raise gr.Error(str(error)) from None
        return kept_rows(session)

    def add_pairs(
        self, session: finetune.Session | None, files: list[str] | None
    ) -> dict[str, Any]:
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
                        missing = f"{path.stem}_mask.png"
                        raise DataError(f"{path.name}: no mask {missing} among the files")
                    session.keep(str(path), str(masks[path.stem]), path.stem)
        except (DataError, OSError, ValueError) as error:
            raise gr.Error(str(error)) from None
        return kept_rows(session)

    def drop_pair(self, session: finetune.Session | None, name: str | None) -> dict[str, Any]:
        """Drop one kept pair."""
        if session is None or not name:
            raise gr.Error("Pick a kept pair to drop.")
        session.drop(name)
        return kept_rows(session)

    def run_finetune(
        self,
        session: finetune.Session | None,
        choice: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to report progress)
    ) -> dict[str, Any]:
        """Fine-tune the chosen model on the kept pairs; it joins this visitor's dropdowns, and
        the Compare tab opens on it against the model it started from. The base is loaded
        through the model shelf's guards (a typed id: from the Hub only, with no token, under
        the parameter limit); the fine-tune runs in a child process (`demo.finetune`)."""
        session = session_of(session)
        base = self.segmenter.models.served(choice, session).model
        client = request.client.host if request and request.client else ""
        try:
            token, label = session.finetune(
                base.pretrained_folder,
                session.labels.get(choice, choice),
                client=client,
                progress=lambda done: progress(done, desc="fine-tuning"),
            )
        except DataError as error:
            raise gr.Error(str(error)) from None
        dice = session.validation_dice(token)
        entries = [*self.entries, *((name, key) for key, name in session.labels.items())]
        scored = "on the pairs held back" if len(session.pairs) >= FEW_PAIRS else "on your pairs"
        figure = f" Dice {scored}: {dice:.3f}." if dice is not None else ""
        chosen = gr.update(choices=entries, value=token)
        return {
            "session": session,
            "tuned_note": f"**{label}** is ready in the model menus, and in Compare against "
            f"{choice}.{figure}",
            "model": chosen,
            "compare_a": chosen,
            "compare_b": gr.update(choices=entries, value=choice),
            "model_zip": str(session.export(token)),
        }

    def push_finetuned(
        self, session: finetune.Session | None, choice: str, repo_id: str, token: str
    ) -> str:
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
