"""The reference figures that `tests/test_objects.py` keeps: Cellpose's own object metrics on
the test's label images (`reference_labels`), run by hand where Cellpose is installed.

    pip install "cellpose<4" && python benchmarks/cellpose_reference.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellpose import metrics, version

from tests.test_objects import reference_labels


def main() -> None:
    target, pred = reference_labels()
    ap, tp, fp, fn = metrics.average_precision([target], [pred], threshold=[0.5, 0.75, 0.9])
    print(f"cellpose {version}")
    print(f"CELLPOSE_AP = {ap[0].tolist()}  # tp {tp[0].tolist()} fp {fp[0].tolist()} "
          f"fn {fn[0].tolist()}")  # fmt: skip


if __name__ == "__main__":
    main()
