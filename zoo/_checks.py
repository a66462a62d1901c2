"""Argument checks and message wording shared across bioseg."""

from __future__ import annotations

from collections.abc import Sequence


def listing(items: Sequence[object], limit: int = 10) -> str:
    """The first `limit` items joined by commas, then how many more: "a, b and 3 more"."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_positive_int(name: str, value: object) -> int:
    """`value` if it is an int >= 1 (not a bool), else a ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
