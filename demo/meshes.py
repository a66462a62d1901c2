"""The surfaces of a label volume as a binary glTF (`.glb`) for the page's 3D view: one mesh per
class by marching cubes (scikit-image) in millimetres, lightly smoothed, in the class colours.

    path = write_glb(labels, spacing, ["background", "anterior", "posterior"], "case.glb")

Coordinates are glTF's (metres are not assumed: one unit is one millimetre), y up: x is the
patient's left, y superior, z anterior, centred on the volume. Each class is one primitive with
its own material; a class absent from the volume is left out. Large volumes and surfaces
of many triangles (a speckled prediction) are sampled more coarsely (marching cubes' step) so
the file stays near MAX_TRIANGLES, small enough to load quickly.
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
MAX_TRIANGLES = 200_000  # a file's triangles (about 4 MB): a speckled surface is sampled coarser
GLTF_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942  # "glTF", "JSON", "BIN"


def surfaces(
    labels: np.ndarray, spacing: Sequence[float], classes: Sequence[str]
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, vertices N x 3 float32 in glTF's axes, triangles M x 3 uint32) of each class
    present in the D x H x W canonical (LPS) `labels`."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    step = max(1, round((labels.size / MAX_VOXELS_FULL_DETAIL) ** (1 / 3)))
    centre = (np.asarray(labels.shape) - 1) / 2 * np.asarray(spacing)
    present = [c for c in range(1, len(classes)) if (labels == c).any()]
    found = []
    for c in present:
        field = gaussian_filter(np.pad(labels == c, 1).astype(np.float32), SMOOTHING)
        coarser = step
        while True:  # the class's share of the triangles, or the coarsest sampling that gives it
            vertices, faces, _, _ = marching_cubes(
                field, 0.5, spacing=tuple(spacing), step_size=coarser
            )
            if len(faces) <= MAX_TRIANGLES / len(present) or coarser >= min(field.shape) // 4:
                break
            coarser *= 2
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
    binary, views, accessors = bytearray(), [], []
    for _, points, triangles in found:  # each class: its positions, then its triangles
        for array in (points, triangles.ravel()):
            views.append(_append(binary, array))
            accessors.append(_accessor(len(views) - 1, array))
    document = {
        "asset": {"version": "2.0", "generator": "bioseg"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [
            {
                "primitives": [
                    {"attributes": {"POSITION": 2 * i}, "indices": 2 * i + 1, "material": i}
                    for i in range(len(found))
                ]
            }
        ],
        "materials": [_material(classes[c], c) for c, _, _ in found],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    chunks += struct.pack("<II", len(binary), BIN_CHUNK) + bytes(binary)
    path = Path(path)
    path.write_bytes(struct.pack("<III", GLTF_MAGIC, 2, 12 + len(chunks)) + chunks)
    return path


def _append(binary: bytearray, array: np.ndarray) -> dict:
    """`array`'s bytes appended to the buffer (padded to 4 bytes); its buffer view."""
    vertices = array.ndim == 2
    view = {"buffer": 0, "byteOffset": len(binary), "byteLength": array.nbytes}
    binary += array.tobytes() + b"\0" * (-array.nbytes % 4)
    return view | {"target": 34962 if vertices else 34963}  # vertex or index data


def _accessor(view: int, array: np.ndarray) -> dict:
    """How glTF reads a view: N x 3 float32 positions (with their bounds), or uint32 indices."""
    if array.ndim == 2:
        bounds = {"min": array.min(0).tolist(), "max": array.max(0).tolist()}
        return {
            "bufferView": view,
            "componentType": 5126,
            "count": len(array),
            "type": "VEC3",
        } | bounds
    return {"bufferView": view, "componentType": 5125, "count": len(array), "type": "SCALAR"}


def _material(name: str, c: int) -> dict:
    """Class `c`'s colour, as the 2D overlays draw it, matte and seen from both sides."""
    red, green, blue = (v / 255 for v in CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)])
    roughness = {"metallicFactor": 0.0, "roughnessFactor": 0.7}
    return {
        "name": name,
        "pbrMetallicRoughness": {"baseColorFactor": [red, green, blue, 1.0], **roughness},
        "doubleSided": True,
    }
