"""The web demo's settings: read from environment variables (a Space's variables and secrets
are environment variables), and from `python app.py`'s flags, which override them.

    settings = settings_from_environment()        # what `import app` builds its page with
    settings, host, port = parse_flags(["--weights", "owner/name", "--port", "8000"], settings)

Nothing here is read at import: a test runner's or Gradio's own command line is never parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import zoo

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """What the page offers and the limits it holds visitors to."""

    weights: tuple[str, ...] = ()  # Hub ids OWNER/NAME offered beside the bundled weights
    engine: str | None = None  # inference engine; None: the fastest measured here
    bundled: Path = ROOT / "weights"  # the weights shipped with the app
    runs: Path = ROOT / "runs"  # local training runs, listed too
    examples: Path = ROOT / "examples"  # image/mask pairs NAME.png, NAME_mask.png
    max_pixels: int = 8192 * 8192  # an upload is refused above this, before decoding
    # A model id typed by a visitor may describe any model: refused above this, before download.
    max_parameters: int = 400_000_000


def settings_from_environment(environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings of `BIOSEG_WEIGHTS` (Hub ids, comma-separated), `BIOSEG_ENGINE`,
    `BIOSEG_RUNS`, `BIOSEG_EXAMPLES`, `BIOSEG_APP_MAX_PIXELS` and `BIOSEG_APP_MAX_PARAMETERS`;
    the default of each one not set."""
    default = Settings()
    weights = (w.strip() for w in environ.get("BIOSEG_WEIGHTS", "").split(","))
    return Settings(
        weights=tuple(filter(None, weights)),
        engine=environ.get(zoo.ENGINE_ENV) or None,
        runs=Path(environ.get("BIOSEG_RUNS", default.runs)),
        examples=Path(environ.get("BIOSEG_EXAMPLES", default.examples)),
        max_pixels=int(environ.get("BIOSEG_APP_MAX_PIXELS", default.max_pixels)),
        max_parameters=int(environ.get("BIOSEG_APP_MAX_PARAMETERS", default.max_parameters)),
    )


def parse_flags(
    argv: list[str] | None, settings: Settings, environ: Mapping[str, str] = os.environ
) -> tuple[Settings, str, int]:
    """`settings` with the command line's `--weights` (added to its Hub ids) and `--engine`;
    and the address to serve on (`--host`, `--port`; default: Gradio's variables
    `GRADIO_SERVER_NAME` and `GRADIO_SERVER_PORT`, else 127.0.0.1:7860)."""
    parser = argparse.ArgumentParser(description="bioseg web demo")
    parser.add_argument("--weights", action="append", default=[], help="a Hub id OWNER/NAME")
    parser.add_argument("--host", default=environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument(
        "--engine",
        choices=zoo.ENGINES,
        default=settings.engine,
        help=f"inference engine (default: ${zoo.ENGINE_ENV}, else the fastest measured here)",
    )
    flags = parser.parse_known_args(argv)[0]  # `gradio app.py` passes arguments of its own
    weights = (*settings.weights, *(w.strip() for w in flags.weights if w.strip()))
    chosen = dataclasses.replace(settings, weights=weights, engine=flags.engine)
    return chosen, flags.host, flags.port
