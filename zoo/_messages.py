"""Wording shared by error messages across bioseg."""

from __future__ import annotations

from collections.abc import Sequence


def listing(items: Sequence[object], limit: int = 10) -> str:
    """The first `limit` items joined by commas, then how many more: "a, b and 3 more"."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
