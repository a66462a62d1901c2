"""What every bioseg command line does with a mistake in its input: one line naming the problem
on standard error and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from trainers.scores.scoring import checked_threshold

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run the block; a ValueError, FileNotFoundError or KeyError ends the process with
    `error: MESSAGE` on standard error and exit status 2."""
    try:
        yield
    except USER_ERRORS as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def user_message(error: Exception) -> str:
    """What a user error says (a KeyError's message without the quotes repr adds)."""
    return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def threshold_argument(text: str) -> float:
    """argparse's `type` for --threshold: a number between 0 and 1, else argparse's one-line
    error (exit status 2)."""
    try:
        return checked_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
