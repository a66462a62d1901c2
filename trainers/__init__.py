"""Training, evaluation, losses and metrics for bioseg models."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path


def _check_zoo_is_ours() -> None:
    """bioseg installs the top-level packages `zoo` and `trainers` side by side. Another
    distribution with a top-level `zoo` that comes first on sys.path would shadow bioseg's and
    fail later in obscure ways; say so at import instead."""
    found = importlib.util.find_spec("zoo")
    ours = Path(__file__).resolve().parents[1] / "zoo" / "__init__.py"
    if found is None or found.origin is None or Path(found.origin).resolve() != ours:
        owners = importlib.metadata.packages_distributions().get("zoo", [])
        others = sorted({name for name in owners if name != "bioseg"}) or ["an unknown source"]
        where = found.origin if found else "nowhere on sys.path"
        raise ImportError(
            f"bioseg's trainers need bioseg's own `zoo` package ({ours.parent}), but `import zoo` "
            f"finds {where} (from {', '.join(others)}). Two distributions install a top-level "
            "`zoo`: use a virtual environment without the other one, or run from a bioseg "
            "checkout, whose folder comes first on sys.path."
        )


_check_zoo_is_ours()
