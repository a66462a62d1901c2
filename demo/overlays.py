"""What the demo draws over an image: the image contrast-stretched for display, and class labels
tinted over it, a block of rows at a time so that full-size temporaries stay small."""

from __future__ import annotations

import numpy as np

CLASS_COLOURS = [(255, 200, 0), (0, 200, 255), (255, 60, 200), (120, 255, 60), (255, 120, 40)]


def _row_blocks(height: int, width: int, pixels: int = 1 << 20) -> list[slice]:
    """Row slices of about `pixels` pixels each: full-size work done a block at a time keeps its
    temporaries a block in size."""
    rows = max(1, pixels // max(width, 1))
    return [slice(top, top + rows) for top in range(0, height, rows)]


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An H x W x C float image in [0, 1] as H x W x 3 uint8, contrast stretched between its 1st
    and 99th percentiles (of at most about 4 million evenly spread pixels: exact below that)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 4e6)))
    low, high = (float(v) for v in np.percentile(image[::step, ::step], (1, 99)))
    span = high - low if high > low else 1.0
    low = low if high > low else 0.0
    rgb = np.empty((*image.shape[:2], 3), dtype=np.uint8)
    for rows in _row_blocks(*image.shape[:2]):
        scaled = (image[rows, :, :3] - low) / span  # float32, one block
        np.clip(scaled, 0, 1, out=scaled)
        scaled *= 255
        rgb[rows] = scaled.astype(np.uint8)  # a grey block is broadcast to the three channels
    return rgb


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Class c > 0 of an H x W label map (or a boolean mask) tinted over an RGB image."""
    out = rgb.copy()
    for rows in _row_blocks(*labels.shape):
        block, shown = labels[rows], out[rows]
        for c in range(1, int(block.max(initial=0)) + 1):
            where = block == c
            colour = np.array(CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)], dtype=np.float32)
            shown[where] = (1 - alpha) * shown[where].astype(np.float32) + alpha * colour
    return out
