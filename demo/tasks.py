"""What the demo's model picker says of a model: what a model trained on each known data set
segments, in what kind of image, and the data set's full name."""

from __future__ import annotations

from trainers.hub.model_card import DATASETS

TASKS = {
    "drive": "retinal vessels, colour fundus",
    "isbi2012": "neuronal membranes, electron microscopy",
    "dsb2018": "cell nuclei, fluorescence and histology",
}


def data_set_name(dataset: str | None) -> str | None:
    """The full name of a known data set (as its model card gives it), else `dataset` itself."""
    return DATASETS[dataset][0] if dataset in DATASETS else dataset
