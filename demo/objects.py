"""What the demo shows of objects: each outlined in a colour of its own, counted, measured in a
table, matched against the target's, and written as files that napari, Fiji and QuPath open
(a 16-bit label image, or a 32-bit TIFF past 65,535 objects, and the table as CSV).

    found = Objects.of(labels, intensity, pixel_area, unit)   # labels from trainers.scores.objects
    found.outlined(rgb), found.rows(), found.write(folder, "cells")
"""

from __future__ import annotations

import colorsys
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainers.data.targets import BOUNDARY, object_classes
from trainers.scores import objects
from trainers.scores.plots import FN, FP, TP

TABLE_ROWS = 1000  # objects listed on the page (largest first); the CSV holds every one
HEADERS = ("id", "area (px)", "area", "diameter (px)", "mean intensity", "row", "column")


def _palette(size: int = 64) -> np.ndarray:
    """`size` well-spread colours (hues by the golden ratio), for ids modulo `size`."""
    hues = (np.arange(size) * 0.618034) % 1.0
    return np.array(
        [[round(255 * v) for v in colorsys.hsv_to_rgb(h, 0.85, 1.0)] for h in hues], np.uint8
    )


PALETTE = _palette()


def outlines(labels: np.ndarray) -> np.ndarray:
    """Each object's rim, one pixel wide (the object target's boundary and contact)."""
    return object_classes(labels) >= BOUNDARY


@dataclass(frozen=True)
class Objects:
    """The objects of one label image, measured (`trainers.scores.objects.object_table`)."""

    labels: np.ndarray
    table: dict[str, np.ndarray]
    unit: str  # the unit of `table["area_physical"]`, squared; "" when the pixel size is unknown

    @classmethod
    def of(
        cls,
        labels: np.ndarray,
        intensity: np.ndarray,
        pixel_area: float | None = None,
        unit: str = "",
    ) -> Objects:
        """`labels`' objects, their mean `intensity` (H x W, the image in [0, 1], grey) and
        areas in `unit` squared where the file gave a pixel size (`pixel_area`)."""
        table = objects.object_table(labels, intensity, pixel_area)
        return cls(labels, table, unit if pixel_area is not None else "")

    @property
    def count(self) -> int:
        return len(self.table["id"])

    def outlined(self, rgb: np.ndarray) -> np.ndarray:
        """The image with each object's outline in its own colour."""
        out = rgb.copy()
        rim = outlines(self.labels)
        out[rim] = PALETTE[self.labels[rim] % len(PALETTE)]
        return out

    def rows(self, limit: int = TABLE_ROWS) -> list[list]:
        """The table's rows for the page (`HEADERS`), the largest `limit` objects first."""
        order = np.argsort(-self.table["area_px"], kind="stable")[:limit]
        physical = self.table.get("area_physical")
        return [
            [
                int(self.table["id"][i]),
                int(self.table["area_px"][i]),
                round(float(physical[i]), 3) if physical is not None else None,
                round(float(self.table["equivalent_diameter_px"][i]), 2),
                round(float(self.table["mean_intensity"][i]), 4),
                round(float(self.table["centroid_row"][i]), 1),
                round(float(self.table["centroid_col"][i]), 1),
            ]
            for i in order
        ]

    def write(self, folder: Path, name: str) -> list[str]:
        """The label image (16-bit PNG; a 32-bit TIFF past 65,535 ids) and the table as CSV,
        every object, with the physical area's unit in its column name
        (`trainers.scores.objects.write_labels`, as `trainers.predict` writes them)."""
        label_file = objects.write_labels(self.labels, folder / name)
        table_file = folder / f"{name}_objects.csv"
        columns = {k: v for k, v in self.table.items() if k != "area_physical"}
        if "area_physical" in self.table:
            columns[f"area_{self.unit}2"] = self.table["area_physical"]
        with table_file.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(zip(*(values.tolist() for values in columns.values()), strict=True))
        return [str(label_file), str(table_file)]


def matched_outlines(
    errors: np.ndarray, predicted: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """The error map with objects outlined by their match at IoU > 0.5: predicted objects that
    match a target object in the true-positive colour, the other predicted ones in the
    false-positive colour, target objects no prediction matches in the false-negative colour;
    and the object scores (`trainers.scores.objects.object_scores`)."""
    found = objects.overlaps(predicted, target)
    hits = found.hits(0.5)
    pred_ids, _ = objects.sequential(predicted)
    true_ids, _ = objects.sequential(target)
    matched_pred = np.zeros(len(found.pred_areas), bool)
    matched_pred[found.pred_ids[hits]] = True
    matched_true = np.zeros(len(found.true_areas), bool)
    matched_true[found.true_ids[hits]] = True
    out = errors.copy()
    rim = outlines(pred_ids)
    out[rim & matched_pred[pred_ids]] = TP
    out[rim & ~matched_pred[pred_ids]] = FP
    missed = outlines(true_ids) & (true_ids > 0) & ~matched_true[true_ids]
    out[missed] = FN
    return out, objects.scores_of(found)  # the overlaps counted once
