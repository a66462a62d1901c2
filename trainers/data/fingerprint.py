"""A data set's fingerprint: what its images and masks are like, measured once, from which a
training plan is derived (`trainers.fit.plan_rules`).

    print("\n".join(describe(fingerprint(parse_spec("drive:../shared/data/DRIVE")))))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .layouts import DatasetSource, read_sample

__all__ = ["Fingerprint", "describe", "fingerprint"]


@dataclass(frozen=True)
class Fingerprint:
    """Measured over a data set's training images (after `limit`, a spread-out subset)."""

    images: int
    heights: tuple[int, int, int]  # median, min, max
    widths: tuple[int, int, int]
    channels: int  # the most common count: 1 (grey) or 3
    bits: int  # 8 or 16, the deepest seen
    mean: tuple[float, ...]  # per channel, intensities in [0, 1] inside the roi, over the images
    # with the most common channel count
    std: tuple[float, ...]
    foreground: dict[str, float]  # class -> fraction of roi pixels
    width: dict[
        str, float
    ]  # class -> median object width, pixels: 2 x its largest inscribed radius
    diameter: dict[
        str, float
    ]  # class -> median connected-component diameter (of a disc of its area)
    empty: int  # images whose target has no foreground
    objects: bool = False  # the masks label each object (DatasetSource.objects)
    light: float = 0.0  # fraction of the images on a light ground (median intensity above 1/2)


def _bits(image: np.ndarray) -> int:
    """8 when every value of an image read in [0, 1] is a level k / 255, else 16: what the
    readers decoded (any format they read), not what a file header says."""
    levels = np.rint(image * 255)
    return 8 if np.array_equal(levels / 255, image) else 16


def fingerprint(source: DatasetSource, *, limit: int = 100) -> Fingerprint:
    """Fingerprint the training split of `source`, reading at most `limit` images spread over
    it (every k-th), so that a large set is measured in seconds."""
    samples = source.splits()["train"]
    if not samples:
        raise ValueError(f"{source.kind}:{source.root} has no training images to fingerprint")
    chosen = samples[:: max(1, -(-len(samples) // limit))]
    names = list(source.class_names)
    shapes, channels, bits, roi_pixels, light = [], [], [], 0, 0
    moments: dict[int, np.ndarray] = {}  # channels -> (sum, sum of squares, count) per channel
    pixels = dict.fromkeys(names[1:], 0)
    # class -> (width, diameter, area) of each component
    objects: dict[str, list[np.ndarray]] = {name: [] for name in names[1:]}
    empty = 0
    for sample in chosen:
        image, mask, roi = read_sample(sample, mask_mode=source.mask_mode, palette=source.palette)
        shapes.append(image.shape[:2])
        channels.append(image.shape[2])
        bits.append(_bits(image))
        inside = image[roi].astype(np.float64)  # N x C
        light += light_ground(inside)
        moments[image.shape[2]] = moments.get(image.shape[2], 0) + np.stack(
            [inside.sum(0), (inside**2).sum(0), np.full(image.shape[2], len(inside))]
        )
        roi_pixels += int(roi.sum())
        labels = mask.astype(np.int64)
        empty += not (labels[roi] > 0).any()
        for c, name in enumerate(names[1:], start=1):
            where = (labels == c) & roi
            pixels[name] += int(where.sum())
            components, count = ndimage.label(where)
            if not count:
                continue
            index = np.arange(1, count + 1)
            areas = np.asarray(ndimage.sum_labels(where, components, index))
            radii = np.asarray(
                ndimage.maximum(ndimage.distance_transform_edt(where), components, index)
            )
            objects[name].append(np.stack([2 * radii, 2 * np.sqrt(areas / np.pi), areas]))
    common = max(set(channels), key=channels.count)
    total, total_squares, count = moments[common] / np.maximum(moments[common][2], 1)[None]
    mean, std = total, np.sqrt(np.maximum(total_squares - total**2, 0))
    heights, widths_px = np.array([h for h, _ in shapes]), np.array([w for _, w in shapes])
    return Fingerprint(
        images=len(samples),
        heights=(int(np.median(heights)), int(heights.min()), int(heights.max())),
        widths=(int(np.median(widths_px)), int(widths_px.min()), int(widths_px.max())),
        channels=common,
        bits=max(bits),
        mean=tuple(round(float(v), 4) for v in mean),
        std=tuple(round(float(v), 4) for v in std),
        foreground={name: pixels[name] / max(roi_pixels, 1) for name in pixels},
        width={name: _weighted_median(found, 0) for name, found in objects.items()},
        diameter={name: _weighted_median(found, 1) for name, found in objects.items()},
        empty=empty,
        objects=source.objects,
        light=light / len(chosen),
    )


def light_ground(pixels: np.ndarray) -> bool:
    """Whether an image's pixels (inside its roi, any shape) lie on a light ground: their median
    intensity above one half (0..1 scale, or 0..255 for uint8)."""
    top = 255 if pixels.dtype == np.uint8 else 1
    return bool(pixels.size) and float(np.median(pixels)) > top / 2


def _weighted_median(objects: list[np.ndarray], row: int) -> float:
    """The median of `row` over all objects, each counted by its area (0 without objects)."""
    if not objects:
        return 0.0
    values, areas = np.concatenate(objects, axis=1)[[row, 2]]
    order = np.argsort(values)
    cumulative = np.cumsum(areas[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def describe(f: Fingerprint) -> list[str]:
    """The fingerprint as lines for a terminal."""
    lines = [
        f"images: {f.images} for training; size median {f.heights[0]}x{f.widths[0]} "
        f"(height x width), min {f.heights[1]}x{f.widths[1]}, max {f.heights[2]}x{f.widths[2]}",
        f"channels: {f.channels}, {f.bits}-bit; intensity mean {list(f.mean)}, std {list(f.std)}",
        f"empty targets: {f.empty}",
        f"ground: {f.light:.0%} of the images light (median intensity above one half), "
        f"{1 - f.light:.0%} dark",
        "objects: " + ("each labelled (a file or id per object)" if f.objects else "not labelled"),
    ]
    for name in f.foreground:
        lines.append(
            f"class {name}: {f.foreground[name]:.1%} of pixels; objects median width "
            f"{f.width[name]:.1f} px, median diameter {f.diameter[name]:.1f} px"
        )
    return lines
