"""Data loading for bioseg: readers, data set layouts, joint transforms, a Dataset, downloads.

from trainers.data import SegmentationDataset, parse_spec, train_transform

source = parse_spec("drive:../shared/data/DRIVE")
splits = source.splits()  # {"train": [Sample, ...], "test": [...]}
transform = train_transform(256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
dataset = SegmentationDataset(splits["train"], transform, patches_per_image=8)
"""

from .dataset import SegmentationDataset
from .download import DOWNLOADS, Download, data_home, download, samples
from .layouts import (
    KINDS,
    SPLITS,
    DatasetSource,
    Sample,
    parse_spec,
    read_sample,
    train_val_split,
)
from .readers import DataError, read_image, read_mask, read_masks_union

_TRANSFORMS = ("SegmentationTransform", "eval_transform", "train_transform")


def __getattr__(name: str) -> object:
    """The transforms, imported on first use: they bring torchvision (about 160 MB resident),
    which the web demo, reading images and masks only, does without."""
    if name in _TRANSFORMS:
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DOWNLOADS",
    "KINDS",
    "SPLITS",
    "DataError",
    "DatasetSource",
    "Download",
    "Sample",
    "SegmentationDataset",
    "SegmentationTransform",
    "data_home",
    "download",
    "eval_transform",
    "parse_spec",
    "read_image",
    "read_mask",
    "read_masks_union",
    "read_sample",
    "samples",
    "train_transform",
    "train_val_split",
]
