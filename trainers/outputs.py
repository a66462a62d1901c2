"""What a batch prediction writes beside its masks or label volumes: `results.csv`, a row per
finished input, and `errors.csv`, the inputs that failed and why (`trainers.predict` for images,
`trainers.volumes.predict` for volumes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_results(path: Path, row_files: list[Path]) -> list[dict[str, Any]]:
    """results.csv from the finished inputs' row files, in their order (the columns every row
    has, in first-seen order); the rows."""
    rows = [json.loads(file.read_text()) for file in row_files if file.is_file()]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["path"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def write_errors(path: Path, errors: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "reason"))
        writer.writerows(errors)
