"""A lesion-like 2D data set from the shared MSD Hippocampus volumes, for the plan's rules: one
grey slice per case with one low-contrast blob (both hippocampus classes as one foreground), the
kind of image a lesion set (ultrasound, dermoscopy, polyps) gives.

    python benchmarks/lesion_slices.py ../shared/data/MSD-Hippocampus /tmp/lesions
    python -m trainers.train --data folder:/tmp/lesions

For each labelled case: the axial slice with the most foreground, its intensities to 8 bits
(the case's 1st-99th percentiles), enlarged 4 times (bicubic; the mask by nearest neighbour)
to about 200 x 140 pixels, as `images/CASE.png` and `masks/CASE.png` (0/255). The folder layout
splits it by bioseg's seeded 70/10/20 rule. MSD is CC-BY-SA 4.0: what this writes stays out of
the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

ENLARGE = 4


def write_slices(msd: Path, output: Path) -> int:
    """Write one slice per labelled case of the MSD folder `msd` under `output`; their count."""
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "masks").mkdir(exist_ok=True)
    count = 0
    for label_path in sorted((msd / "labelsTr").glob("*.nii.gz")):
        if label_path.name.startswith("."):
            continue
        labels = np.asarray(nib.load(label_path).dataobj) > 0
        image = np.asarray(nib.load(msd / "imagesTr" / label_path.name).dataobj, np.float32)
        k = int(labels.sum(axis=(0, 1)).argmax())  # the axial slice with the most foreground
        low, high = np.percentile(image, (1, 99))
        grey = (np.clip((image[:, :, k] - low) / max(high - low, 1e-6), 0, 1) * 255).astype(
            np.uint8
        )
        size = (grey.shape[0] * ENLARGE, grey.shape[1] * ENLARGE)  # (width, height): x, y
        stem = label_path.name.removesuffix(".nii.gz")
        Image.fromarray(grey.T).resize(size, Image.Resampling.BICUBIC).save(
            output / "images" / f"{stem}.png"
        )
        mask = Image.fromarray(labels[:, :, k].T.astype(np.uint8) * 255)
        mask.resize(size, Image.Resampling.NEAREST).save(output / "masks" / f"{stem}.png")
        count += 1
    return count


if __name__ == "__main__":
    print(write_slices(Path(sys.argv[1]), Path(sys.argv[2])), "slices written")
