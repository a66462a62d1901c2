"""The surfaces of a label volume as a binary glTF (`.glb`) for the page's 3D view: one mesh per
class by marching cubes (scikit-image) in millimetres, lightly smoothed, in the class colours.

    path = write_glb(labels, spacing, ["background", "anterior", "posterior"], "case.glb")

Coordinates are glTF's (metres are not assumed: one unit is one millimetre), y up: x is the
patient's left, y superior, z anterior, centred on the volume. Each class is one primitive with
its own material; a class absent from the volume is left out. Large surfaces are sampled more
coarsely (marching cubes' step) so the file stays small enough to load quickly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from demo.overlays import CLASS_COLOURS

SMOOTHING = 0.8  # voxels: the Gaussian the mask is blurred by before its 0.5 surface is taken
MAX_VOXELS_FULL_DETAIL = 8_000_000  # above this, marching cubes steps over voxels


def surfaces(
    labels: np.ndarray, spacing: Sequence[float], classes: Sequence[str]
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, vertices N x 3 float32 in glTF's axes, triangles M x 3 uint32) of each class
    present in the D x H x W canonical (LPS) `labels`."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    step = max(1, round((labels.size / MAX_VOXELS_FULL_DETAIL) ** (1 / 3)))
    centre = (np.asarray(labels.shape) - 1) / 2 * np.asarray(spacing)
    found = []
    for c in range(1, len(classes)):
        mask = labels == c
        if not mask.any():
            continue
        field = gaussian_filter(np.pad(mask, 1).astype(np.float32), SMOOTHING)
        vertices, faces, _, _ = marching_cubes(field, 0.5, spacing=tuple(spacing), step_size=step)
        d, h, w = (vertices - np.asarray(spacing) - centre).T  # mm from the centre; D, H, W
        # canonical LPS: W points left, H posterior, D superior -> glTF x left, y up, z anterior
        points = np.stack([w, d, -h], axis=1).astype(np.float32)
        found.append((c, points, faces.astype(np.uint32)))  # wound so their normals face out
    return found


def write_glb(
    labels: np.ndarray, spacing: Sequence[float], classes: Sequence[str], path: str | Path
) -> Path | None:
    """The classes' surfaces as one `.glb` file; None when no class is present."""
    found = surfaces(labels, spacing, classes)
    if not found:
        return None
    binary, views, accessors, primitives, materials = bytearray(), [], [], [], []
    for index, (c, points, triangles) in enumerate(found):
        for array, kind, target in ((points, "VEC3", 34962), (triangles.ravel(), "SCALAR", 34963)):
            views.append(
                {
                    "buffer": 0,
                    "byteOffset": len(binary),
                    "byteLength": array.nbytes,
                    "target": target,
                }
            )
            binary += array.tobytes()
            binary += b"\0" * (-len(binary) % 4)
            accessor = {
                "bufferView": len(views) - 1,
                "componentType": 5126 if kind == "VEC3" else 5125,  # float32, uint32
                "count": len(array),
                "type": kind,
            }
            if kind == "VEC3":
                accessor |= {"min": points.min(0).tolist(), "max": points.max(0).tolist()}
            accessors.append(accessor)
        red, green, blue = (v / 255 for v in CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)])
        materials.append(
            {
                "name": classes[c],
                "pbrMetallicRoughness": {
                    "baseColorFactor": [red, green, blue, 1.0],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.7,
                },
                "doubleSided": True,
            }
        )
        primitives.append(
            {"attributes": {"POSITION": 2 * index}, "indices": 2 * index + 1, "material": index}
        )
    document = {
        "asset": {"version": "2.0", "generator": "bioseg"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": primitives}],
        "materials": materials,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = (
        struct.pack("<II", len(text), 0x4E4F534A)
        + text
        + struct.pack("<II", len(binary), 0x004E4942)
        + bytes(binary)
    )
    path = Path(path)
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks)
    return path
