"""Training targets derived from per-object labels: what a model learns so that touching objects
can be told apart (`trainers.scores.objects.split_objects` turns its answer back into objects).

    classes = object_classes(labels)  # 0 background, 1 interior, 2 boundary, 3 contact

The boundary is each object's rim one pixel wide (its pixels with an 8-neighbour of another id,
background included), as in the three-class target of Caicedo et al. 2019 ("Evaluation of deep
learning strategies for nucleus segmentation"), in which it beat a plain foreground mask on
touching nuclei. The rim where an object touches another (an 8-neighbour of another object's id)
is a class of its own, the contact, so that two touching objects are parted by two contact
pixels: a model trained on three classes rarely learnt those few pixels (their boundary
probability was 0.25 against 0.65 on the rest of the rim, on DSB 2018's validation images),
and merged neighbours; as a class of its own each contact weighs as much in the loss as the
rest of the rim (docs/objects.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["OBJECT_CLASSES", "object_classes"]

BACKGROUND, INTERIOR, BOUNDARY, CONTACT = 0, 1, 2, 3
OBJECT_CLASSES = ("background", "{thing}", "{thing} boundary", "{thing} contact")
"""The class names of the object target, `{thing}` the data set's (e.g. nucleus)."""
CONTACT_WIDTH = 1  # pixels: an object's pixels this near another object are its contact (2 tried)


def object_classes(labels: np.ndarray) -> np.ndarray:
    """The object target (int64 H x W: background, interior, boundary, contact) of a label image
    (H x W integers, 0 background, one id per object)."""
    labels = np.asarray(labels)
    rim = (ndimage.maximum_filter(labels, size=3) != labels) | (
        ndimage.minimum_filter(labels, size=3) != labels
    )
    classes = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.int64)
    classes[rim & (labels > 0)] = BOUNDARY
    others = np.where(labels > 0, labels, labels.max() + 1)  # background above every id
    near = 2 * CONTACT_WIDTH + 1
    touching = (ndimage.maximum_filter(labels, size=near) > labels) | (
        ndimage.minimum_filter(others, size=near) < labels
    )
    classes[touching & (labels > 0)] = CONTACT
    return classes
