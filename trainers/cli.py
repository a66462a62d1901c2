"""What every bioseg command line does with a mistake in its input: one line naming the problem
on standard error and exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

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
