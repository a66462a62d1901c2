"""Ten thousand objects in one image: the demo's object views (split, count, outline, table,
label image and CSV, match against a target) timed beside the pixel views' own cost, with the
peak memory they add, on a 2048x2048 image of 10,000 touching discs.

    python benchmarks/bench_objects.py

The peer in the same run is the work every request already does: drawing the prediction
overlay and writing its PNG (`demo.views.overlay`, `write_png`). Prints a Markdown table.
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.objects import Objects, matched_outlines
from demo.overlays import overlay
from demo.views import write_png
from trainers.data.targets import object_classes
from trainers.scores.objects import objects_of
from trainers.scores.plots import error_map

SIDE, GRID = 2048, 100  # 100 x 100 discs, 20 px apart, radius 10: neighbours touch


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True labels, the object target's probabilities for them, and an RGB image."""
    rows, columns = np.indices((SIDE, SIDE))
    pitch = SIDE // GRID
    cell = (rows // pitch) * GRID + columns // pitch + 1
    centre_r, centre_c = (rows // pitch) * pitch + pitch / 2, (columns // pitch) * pitch + pitch / 2
    inside = (rows - centre_r) ** 2 + (columns - centre_c) ** 2 <= (pitch / 2) ** 2
    labels = np.where(inside, cell, 0).astype(np.int32)
    classes = object_classes(labels)
    probabilities = np.stack([classes == c for c in range(3)]).astype(np.float32)
    rgb = np.where(inside[..., None], 200, 40).astype(np.uint8).repeat(3, axis=2)
    return labels, probabilities, rgb


def timed(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    truth, probabilities, rgb = scene()
    intensity = rgb[..., 0].astype(np.float16) / 255
    folder = Path(tempfile.mkdtemp())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    labels = objects_of(probabilities, 0.5, object_target=True)
    found = Objects.of(labels, intensity)
    steps = {
        "split (seeded watershed)": lambda: objects_of(probabilities, 0.5, object_target=True),
        "measure (table)": lambda: Objects.of(labels, intensity),
        "outline": lambda: found.outlined(rgb),
        "table rows (1,000 shown)": found.rows,
        "label image + CSV": lambda: found.write(folder, "bench"),
        "match against the target": lambda: matched_outlines(
            error_map(labels > 0, truth > 0), labels, truth
        ),
    }
    peer = timed(lambda: write_png(overlay(rgb, labels > 0), folder / "overlay.png"))
    results = {name: timed(run) for name, run in steps.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{found.count} objects in a {SIDE}x{SIDE} image; the peer (overlay + PNG of the "
          f"prediction, done on every request) {peer:.2f} s\n")  # fmt: skip
    print("| step | seconds | x the peer |\n| --- | ---: | ---: |")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {seconds / peer:.1f} |")
    total = sum(results.values())
    print(f"| all object views | {total:.2f} | {total / peer:.1f} |")
    print(f"\npeak resident memory {peak:.0f} MB ({peak - before:.0f} MB above the scene's)")


if __name__ == "__main__":
    main()
