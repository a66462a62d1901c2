"""What the scripts' endpoint (`/predict`) answers: the mask file and a small record of what it
holds, with none of the page's pictures.

    mask_file, record = answer(model, image, probabilities, "scan", None, "drive-unet", folder)
    record == {"model": "drive-unet", "threshold": 0.42, "classes": ["background", "vessel"],
               "size": [565, 584], "mask": "scan_mask.png"}  # plus "count", "objects" for objects
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from demo.objects import Objects
from demo.views import class_names, write_png
from trainers.scores.objects import objects_of
from trainers.scores.scoring import class_map
from zoo import SegmentationModel


def answer(
    network: SegmentationModel,
    image: np.ndarray,
    probabilities: np.ndarray,
    name: str,
    threshold: float | None,
    model: str,
    folder: Path,
) -> tuple[str, dict[str, Any]]:
    """The mask of a model's K x H x W `probabilities` for an H x W x C `image`, written in
    `folder`, and its record: the model's name, the threshold used (the saved one when
    `threshold` is None), the class names and the image's size; for a model of the object
    target, its objects' label image (16-bit PNG, or a 32-bit TIFF past 65,535 objects) is the
    mask, with their count and table."""
    if threshold is None:
        threshold = float(network.pretrained_config.get("threshold", 0.5))
    height, width = image.shape[:2]
    record: dict[str, Any] = {
        "model": model,
        "threshold": threshold,
        "classes": class_names(network),
        "size": [width, height],
    }
    if network.pretrained_config.get("objects"):
        labels = objects_of(probabilities.astype(np.float32), threshold, object_target=True)
        found = Objects.of(labels, image.mean(axis=2))
        mask_file = found.write(folder, name)[0]
        rows = zip(*(column.tolist() for column in found.table.values()), strict=True)
        objects = [dict(zip(found.table, row, strict=True)) for row in rows]
        record |= {"count": found.count, "objects": objects}
    else:
        labels = class_map(probabilities, threshold).astype(np.uint8)
        mask = labels * 255 if network.num_classes == 1 else labels
        mask_file = write_png(mask, folder / f"{name}_mask.png")
    return mask_file, record | {"mask": Path(mask_file).name}
