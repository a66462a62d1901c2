"""What the page lists: every model with weights (bundled, local runs, Hub ids), their test
figures, the dropdowns' entries, the examples and the Compare tab's pairs of the report.

    catalogue = Catalogue.of(settings)          # read once, when the page is built
    catalogue.choices["drive-unet (bundled)"]   # -> "/srv/bioseg/weights/drive-unet"
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import zoo
from demo.settings import Settings
from demo.tasks import TASKS
from trainers.data.readers import read_decoded
from zoo._hub import download_file

LOG = logging.getLogger("bioseg.app")
REPORT_FAMILIES = ("fcn", "vgg16_fcn")  # the report's models, compared with a U-Net
MAX_SUMMARY_BYTES = 1_000_000  # a Hub repo's summary.json is read only below this size
# A real fundus photograph that scikit-image ships, for the DRIVE model (it has no target).
# Its ihc.png and cell.png are out of the nuclei model's domain (DAB-stained membranes, noise):
# the nuclei examples are DSB 2018 test images with their targets, under examples/dsb2018/.
SKIMAGE_EXAMPLES = {"retina.jpg": "drive"}


@dataclass(frozen=True)
class Listed:
    """A listed model with weights on disk: its data set, family and mean test Dice."""

    label: str
    dataset: str
    family: str
    test_dice: float


@dataclass(frozen=True)
class Catalogue:
    """The page's models and examples: `choices` (label -> folder or Hub id), those on disk
    best first (`listed`), the dropdowns' `entries`, the Segment tab's `examples` (image,
    target, model) and the Compare tab's `comparisons` (model A, model B, image, target)."""

    choices: dict[str, str]
    listed: list[Listed]
    entries: list[tuple[str, str]]
    examples: list[list]
    comparisons: list[list]

    @classmethod
    def of(cls, settings: Settings) -> Catalogue:
        """The catalogue of `settings`' folders and Hub ids; no model is loaded."""
        choices = weight_choices(settings.bundled, settings.runs, settings.weights)
        listed = listed_models(choices)
        examples = example_rows(listed, choices, settings.examples)
        return cls(
            choices,
            listed,
            dropdown_entries(listed, choices),
            examples,
            report_comparisons(examples, listed),
        )

    @property
    def default(self) -> str | None:
        """The label of the first model, the one the page opens on."""
        return next(iter(self.choices), None)

    def example_image(self, model: zoo.SegmentationModel) -> np.ndarray | None:
        """The first example image of the model's data set (the engine's bf16 agreement check
        is made on it), or None."""
        dataset = model.pretrained_config.get("dataset")
        for image, _, _ in self.examples:
            path = Path(image)
            if SKIMAGE_EXAMPLES.get(path.name, path.parent.name) == dataset:
                return read_decoded(path).pixels
        return None


def weight_choices(bundled: Path, runs: Path, hub_ids: tuple[str, ...] = ()) -> dict[str, str]:
    """Label -> location of every image model with weights: bundled, local runs, Hub ids (a
    volume model, whose config holds "volume", is not offered for 2D images)."""
    choices = {}
    for folder in sorted(bundled.glob("*/model.safetensors")):
        if not _volume_model(folder.parent):
            choices[f"{folder.parent.name} (bundled)"] = str(folder.parent)
    for folder in sorted(runs.glob("*/model.safetensors")):
        if not _volume_model(folder.parent):
            choices[f"{folder.parent.name} (run)"] = str(folder.parent)
    for repo_id in filter(None, (h.strip() for h in hub_ids)):
        choices[f"{repo_id} (Hub)"] = repo_id
    return choices


def _volume_model(folder: Path) -> bool:
    try:
        return "volume" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # listed; loading it reports what is wrong


def held_out_summary(folder: Path) -> dict | None:
    """The evaluation summary kept beside local weights (bundled: summary.json; runs: eval/)."""
    for path in (folder / "summary.json", folder / "eval" / "summary.json"):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def hub_held_out_summary(repo_id: str, token: bool | None) -> dict | None:
    """summary.json of a Hub repo (trainers.push uploads it), fetched with `token` (None: the
    host's, for listed repos; False: none, for typed ones); None when absent or too large."""
    try:
        path = download_file(repo_id, None, "summary.json", token=token)
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (zoo.PretrainedWeightsError, OSError, ValueError) as error:
        LOG.info("%s: no test figures for the card (%s)", repo_id, error)
        return None


def held_out_figures(summary: dict) -> str:
    """The card's line of test figures; KeyError, TypeError or ValueError when `summary` is
    not an evaluation summary written by trainers.evaluate."""
    dice, iou, hd95 = (float(summary["metrics"][k]["mean"]) for k in ("dice", "iou", "hd95"))
    pooled = float(summary.get("pooled", {}).get("dice", float("nan")))
    return (
        f"Test ({summary.get('split', 'test')} split, {summary.get('n_images', '?')} "
        f"images, threshold {summary.get('threshold', 0.5)}), per image: Dice "
        f"{dice:.3f}, IoU {iou:.3f}, HD95 {hd95:.1f} px; pooled Dice {pooled:.3f}."
    )


def listed_models(choices: dict[str, str]) -> list[Listed]:
    """The models of `choices` stored on disk, best test Dice first (Hub ids are left out)."""
    found = []
    for label, location in choices.items():
        folder = Path(location)
        if not folder.is_absolute():
            continue
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            summary = held_out_summary(folder)
            dice = summary["metrics"]["dice"]["mean"] if summary else -1
            family = zoo.get_spec(config["model"]).family
        except (OSError, ValueError, KeyError, TypeError) as error:
            LOG.warning("%s: no data set or test figures for the defaults (%s)", folder, error)
            continue
        found.append(Listed(label, str(config.get("dataset", "")), family, float(dice)))
    return sorted(found, key=lambda model: -model.test_dice)


def example_rows(listed: list[Listed], choices: dict[str, str], folder: Path) -> list[list]:
    """scikit-image's bundled images, then image/mask pairs under `folder`, each with the best
    model of its data set (else the first of `choices`)."""
    import skimage

    # data set -> its best model by test Dice (bundled models win over runs on a tie).
    by_dataset = {}
    for model in listed:
        by_dataset.setdefault(model.dataset, model.label)
    default = next(iter(choices), "")
    rows = []
    for file, dataset in SKIMAGE_EXAMPLES.items():
        path = Path(skimage.data_dir) / file
        if path.is_file():
            rows.append([str(path), None, by_dataset.get(dataset, default)])
    for mask in sorted(folder.glob("**/*_mask.png")):
        image = mask.with_name(mask.name.removesuffix("_mask.png") + ".png")
        if image.is_file():
            rows.append([str(image), str(mask), by_dataset.get(mask.parent.name, default)])
    return rows


def dropdown_entries(listed: list[Listed], choices: dict[str, str]) -> list[tuple[str, str]]:
    """The dropdowns' entries: each label says the model's task, the value stays its name."""
    tasks = {model.label: TASKS.get(model.dataset) for model in listed}
    return [(f"{c}: {tasks[c]}" if tasks.get(c) else c, c) for c in choices]


def report_comparisons(examples: list[list], listed: list[Listed]) -> list[list]:
    """Compare-tab examples: each report model against the best other model of its data set,
    on that data set's first example with a target."""
    rows = []
    pairs = {row[2]: row for row in examples if row[1] is not None}  # model -> its example
    for report in (m for m in listed if m.family in REPORT_FAMILIES):
        peers = [
            m for m in listed if m.dataset == report.dataset and m.family not in REPORT_FAMILIES
        ]
        if peers and peers[0].label in pairs:
            image, mask, _ = pairs[peers[0].label]
            rows.append([report.label, peers[0].label, image, mask])
    return rows
