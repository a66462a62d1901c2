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

from trainers.data.layouts import KINDS
from trainers.fit.budget import parse_duration
from trainers.fit.losses import check_loss_weights
from zoo._checks import check_positive_int
from zoo._spec import check_scale

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LEGACY = {"amp", "note"}  # keys of older runs' train_config.json that are no settings (ignored)

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


def setting(default: Any, help: str) -> Any:
    """A TrainConfig field with its documentation, which `--help` shows beside the default."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a training run; the resolved values are saved as train_config.json.
    The plan (`--plan auto`, the default) replaces the defaults of the settings it derives."""

    model: str = setting("timm/resnet18", "a zoo model name (python -m zoo lists them)")
    data: str = setting(
        "",
        "the data set as KIND:PATH; kinds: " + ", ".join(KINDS) + " (python -m "
        "trainers.data info KIND:PATH describes one)",
    )
    output: str = setting("", "the run folder; empty: runs/<date>-<time>-<model>")
    model_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra options for the model's builder, as JSON"}
    )
    pretrained: bool = setting(False, "start the encoder from ImageNet weights (network or cache)")
    finetune: str = setting(
        "",
        "start from these weights (a run folder or Hub id): their model, options, channels, "
        "normalization, object target and threshold carried over; a short plan of its own "
        "(precision, pairs held back, crops, learning rate, scale)",
    )
    in_channels: int = setting(3, "input channels the model takes: 3 (colour) or 1 (grey)")
    steps: int = setting(
        1000,
        "optimizer steps the run trains for (the plan chooses them); 0 with a time budget: "
        "the budget alone ends the run",
    )
    epochs: int = setting(0, "passes over the training crops instead of --steps (0: use --steps)")
    time_budget: str = setting(
        "", "wall-clock cap on the run, e.g. 90s, 20m, 2h; the plan fits its steps into it"
    )
    val_every: int = setting(
        0, "validate and checkpoint every this many steps (0: about 20 times a run)"
    )
    batch_size: int = setting(8, "crops per optimizer step and process (global: times ranks)")
    optimizer: str = setting("adam", "adam or adamw")
    lr: float = setting(1e-3, "the peak learning rate, decayed to 0 by a cosine over the run")
    warmup: int = setting(0, "steps of linear learning-rate warm-up from 0 to --lr")
    ema: float = setting(
        0.0,
        "decay of an exponential moving average of the weights, validated and saved in place of "
        "the last step's (e.g. 0.99; 0: none)",
    )
    weight_decay: float = setting(0.0, "the optimizer's weight decay")
    image_size: int = setting(256, "side of the square training crops, pixels")
    patches_per_image: int = setting(1, "random crops per image and pass over the data")
    scale: float = setting(
        1.0, "train and predict at this multiple of the images' resolution (at most 1.5)"
    )
    object_width: float = setting(
        0.0,
        "the training images' typical object width in pixels at full resolution, saved with the "
        "model: new images it is adapted to are rescaled to it (the plan measures it; 0: unknown)",
    )
    objects: bool = setting(
        False,
        "learn the object target (background, interior, boundary, contact; the loss pooled over "
        "the batch) where the masks label each object, and split objects by a seeded "
        "watershed; the plan turns it on for such data",
    )
    invert: float = setting(
        0.0,
        "probability that a training crop is turned grey and inverted (dark objects on a light "
        "ground become light on dark); the plan sets it where the images have both grounds",
    )
    balance_grounds: bool = setting(
        False,
        "repeat the images of the rarer ground (light or dark) so that each ground gives about "
        "as many training crops; the plan turns it on where the images have both grounds",
    )
    dice_weight: float = setting(0.5, "loss = dice_weight * Dice loss + iou_weight * IoU loss")
    batch_dice: bool = setting(
        False,
        "pool the loss's sums over the batch (batch Dice) rather than score each crop: "
        "crops without foreground then still penalize what is predicted in them; always on for "
        "the object target, and in fine-tunes (their plan)",
    )
    iou_weight: float = setting(0.5, "the IoU loss's weight (see --dice-weight)")
    val_fraction: float = setting(0.2, "fraction held out for validation without a val split")
    threshold: float = setting(
        0.0,
        "probability above which a pixel is foreground (binary models); 0: chosen on the "
        "validation images at the end (else 0.5); a value given here is kept",
    )
    mean: list[float] = field(
        default_factory=list,
        metadata={"help": "per-channel input mean in [0, 1]; empty: the model's"},
    )
    std: list[float] = field(
        default_factory=list, metadata={"help": "per-channel input std; empty: the model's own"}
    )
    workers: int = setting(2, "DataLoader worker processes")
    seed: int = setting(0, "seed of the split, shuffling, augmentation and initialization")
    deterministic: bool = setting(False, "deterministic kernels: reproducible, slower")
    compile: bool = setting(False, "torch.compile the model (its compile time is printed)")
    precision: str = setting(
        "auto",
        "bf16, fp16 (CUDA, with a GradScaler), fp32, or auto: bf16 on a GPU that has "
        "it, else fp16; on the CPU the faster of bf16 and fp32 in a timed step",
    )
    channels_last: bool = setting(True, "NHWC memory format (faster convolutions, CPU and GPU)")
    evaluate: bool = setting(True, "evaluate the best weights on the test split at the end")
    push_to_hub: str = setting("", "OWNER/NAME: publish the run to the Hugging Face Hub")
    space: str = setting("", "OWNER/NAME: with --push-to-hub, also a Space serving the model")
    license: str = setting("", "the Hub licence id the model card states (mit, apache-2.0...)")

    def __post_init__(self) -> None:
        positive = ("batch_size", "image_size", "patches_per_image", "in_channels")
        for name in positive:
            check_positive_int(name, getattr(self, name))
        if self.time_budget:
            parse_duration(self.time_budget)  # a ValueError naming the text
        for name in ("steps", "epochs", "val_every", "warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (self.steps or self.epochs or self.time_budget):
            raise ValueError(
                "a run needs a length: steps > 0, epochs > 0 or a time budget; got steps 0, "
                "epochs 0 and no time budget"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("lr", "weight_decay", "object_width"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "lr" and value == 0):
                raise ValueError(f"{name} must be a finite number >= 0 (lr > 0), got {value!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be a decay in [0, 1), 0 for none, got {self.ema!r}")
        if not 0 <= self.invert <= 1:
            raise ValueError(f"invert must be a probability in [0, 1], got {self.invert!r}")
        check_loss_weights(self.dice_weight, self.iou_weight)
        check_scale(self.scale)
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), or 0 to tune it, got {self.threshold}")
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
    A finished run's "note" (how it ended) and an older run's "amp" are left out."""
    values = {key: value for key, value in values.items() if key not in LEGACY}
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


def build_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """A parser with one flag per TrainConfig field, each with its documentation, unit and
    default; flags not given stay absent. `epilog` (usage examples) is shown as written."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        shown = json.dumps(default) if isinstance(default, dict | list) else repr(default)
        help_text = f"{spec.metadata['help']} (default: {shown})".replace("%", "%%")
        parser.add_argument(flag, help=help_text, **kwargs)
    return parser


def resolve(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < base (a resumed run's settings) < preset < config file < explicit flags."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "preset", None):
        values.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    values.update({k: v for k, v in vars(args).items() if k in FIELDS})
    if getattr(args, "time_budget", None) and not {"steps", "epochs"} & set(values):
        values["steps"] = 0  # a time budget alone (no plan): it, not the default steps, ends it
    return TrainConfig(**from_dict(values, "settings"))
