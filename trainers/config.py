"""The training configuration: one flat dataclass, presets, a JSON file and command-line overrides.

Precedence, lowest first: the dataclass defaults, `--preset`, `--config FILE`, explicit flags.
Unknown keys in a config file and unknown flags are rejected.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.budget import parse_duration
from trainers.losses import check_loss_weights
from zoo._checks import check_positive_int
from zoo._spec import check_scale

PRESETS: dict[str, dict[str, Any]] = {
    # The report: ImageNet-pretrained, frozen VGG16 FCN, Adam at 1e-3 with a cosine schedule over
    # the run, batch 128, 10 epochs at 224x224, Dice and IoU losses weighted equally.
    "report": {
        "model": "vgg16_fcn",
        "pretrained": True,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 128,
        "epochs": 10,
        "image_size": 224,
        "dice_weight": 0.5,
        "iou_weight": 0.5,
        "model_kwargs": {"freeze_backbone": True},
    },
}


@dataclass
class TrainConfig:
    """Every setting of a training run; the resolved values are saved as train_config.json."""

    model: str = "timm/resnet18"  # a zoo name (python -m zoo lists them)
    data: str = ""  # KIND:PATH, e.g. drive:../shared/data/DRIVE (python -m trainers.data info)
    output: str = ""  # run folder; empty: runs/<timestamp>-<model>
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder options (JSON)
    pretrained: bool = False  # start the encoder from ImageNet weights (needs network or cache)
    in_channels: int = 3  # grey data sets can use 1
    epochs: int = 10  # 0: no limit, the time budget ends the run
    time_budget: str = ""  # e.g. 90s, 20m, 2h: the run ends then (or after epochs, if first)
    batch_size: int = 8  # per process; the global batch is batch_size * world size
    optimizer: str = "adam"  # adam or adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    image_size: int = 256  # side of the square training crops
    patches_per_image: int = 1  # random crops per image and epoch (large images: more)
    scale: float = 1.0  # train and predict at this fraction of the images' resolution (0, 1]
    dice_weight: float = 0.5  # loss = dice_weight * Dice loss + iou_weight * IoU loss
    iou_weight: float = 0.5
    val_fraction: float = 0.2  # held out of train when the data set has no val split
    threshold: float = 0.5  # probability above which a pixel is foreground (binary models)
    mean: list[float] = field(default_factory=list)  # per input channel; empty: the model's own
    std: list[float] = field(default_factory=list)
    workers: int = 2  # DataLoader processes
    seed: int = 0
    deterministic: bool = False  # deterministic kernels: reproducible, slower
    compile: bool = False  # torch.compile the model (CUDA)
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # NHWC memory format on CUDA (ignored on the CPU)
    evaluate: bool = True  # evaluate the best weights on the test split at the end
    push_to_hub: str = ""  # OWNER/NAME: publish the run to the Hugging Face Hub at the end
    space: str = ""  # OWNER/NAME: with push_to_hub, also a Gradio Space that serves the model
    license: str = ""  # the Hub licence id the model card states (mit, apache-2.0, cc-by-4.0...)

    def __post_init__(self) -> None:
        positive = ("batch_size", "image_size", "patches_per_image", "in_channels")
        for name in positive:
            check_positive_int(name, getattr(self, name))
        if self.time_budget:
            parse_duration(self.time_budget)  # a ValueError naming the text
        if not isinstance(self.epochs, int) or self.epochs < (0 if self.time_budget else 1):
            raise ValueError(
                f"epochs must be a positive integer (or 0 with a time budget), got {self.epochs!r}"
            )
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
                raise ValueError(f"{name} must be a finite number >= 0 (lr > 0), got {value!r}")
        check_loss_weights(self.dice_weight, self.iou_weight)
        check_scale(self.scale)
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if (self.mean or self.std) and not (
            len(self.mean) == len(self.std) == self.in_channels and min(self.std) > 0
        ):
            raise ValueError(
                f"mean and std need one value per input channel ({self.in_channels}), std "
                f"positive; got {self.mean} and {self.std}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def from_dict(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check that `values` (from `source`, for messages) only has known keys of the right types.
    A finished run's "note" (how it ended) is not a setting and is left out."""
    values = {key: value for key, value in values.items() if key != "note"}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
        )
    defaults = TrainConfig().to_dict()
    for key, value in values.items():
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(
                f"{source}: {key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    return values


def load_config_file(path: Path) -> dict[str, Any]:
    """Settings from a JSON file (e.g. a run's train_config.json), validated."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a JSON object, got {type(values).__name__}")
    return from_dict(values, str(path))


def _json(kind: type) -> Any:
    """An argparse type: `text` parsed as JSON, which must be a `kind` (dict or list)."""

    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}, got {text!r}")
        return value

    return parse


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with one flag per TrainConfig field; flags not given stay absent."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named preset")
    parser.add_argument("--config", type=Path, help="a JSON file of settings")
    parser.add_argument("--resume", type=Path, help="continue the run in this folder")
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = (
            spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        )
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, dict | list):
            kwargs["type"] = _json(type(default))
        else:
            kwargs["type"] = type(default)
        parser.add_argument(flag, help=f"default: {default!r}", **kwargs)
    return parser


def resolve(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < base (a resumed run's settings) < preset < config file < explicit flags."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "preset", None):
        values.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    values.update({k: v for k, v in vars(args).items() if k in FIELDS})
    if getattr(args, "time_budget", None) and "epochs" not in values:
        values["epochs"] = 0  # a time budget alone: it, not the default epochs, ends the run
    return TrainConfig(**from_dict(values, "settings"))
