"""One model contract for every plugin: `create_model` wraps what a builder returns."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ._checks import check_positive_int
from ._pretrained import PretrainedWeightsError
from ._registry import get_spec
from ._spec import ModelSpec, at_size, match_channels, normalize, rescale


def to_probabilities(logits: Tensor) -> Tensor:
    """Logits N x K x H x W as class probabilities: sigmoid for one class (K = 1), else softmax
    over the classes. The one place where logits become probabilities."""
    logits = logits.float()  # under autocast too: thresholds are compared in float32
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)


class ModelBuildError(RuntimeError):
    """A plugin's builder failed or returned something that is not a model."""


class SegmentationModel(nn.Module):
    """A plugin's network with the checks and conveniences every bioseg model shares.

    `forward` returns logits N x num_classes x H x W for an N x in_channels x H x W input (or
    x D x H x W, for a volume model: `spec.spatial_dims` 3), and raises a clear error if the
    plugin's network answers at another shape.
    """

    def __init__(
        self,
        net: nn.Module,
        spec: ModelSpec,
        *,
        num_classes: int,
        in_channels: int,
        build_kwargs: dict[str, object],
    ) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.build_kwargs = build_kwargs
        self.pretrained_config: dict[str, object] = {}  # config.json, when loaded from one
        self.pretrained_folder: Path | None = None  # where that config.json lies on this machine
        # Trained and run at this fraction of the images' resolution (objects too large for a
        # crop at full resolution); `predict` answers at the input's size all the same.
        self.scale = 1.0

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        logits = self.net(x)
        self.check_output(logits, x)
        return logits

    def check_input(self, x: Tensor) -> None:
        """A ValueError unless `x` is a batch N x in_channels x H x W (D x H x W for a volume
        model) of at least min_size a side."""
        dims = self.spec.spatial_dims
        if x.ndim != 2 + dims or x.shape[1] != self.in_channels:
            axes = " x ".join("DHW"[-dims:])
            raise ValueError(
                f"{self.spec.name} expects a batch N x {self.in_channels} x {axes}, "
                f"got shape {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < self.spec.min_size:
            sides = "x".join(str(side) for side in x.shape[2:])
            raise ValueError(
                f"{self.spec.name} needs inputs of at least {self.spec.min_size} "
                f"{'voxels' if dims == 3 else 'pixels'} a side, got {sides}"
            )

    def check_output(self, logits: object, x: Tensor) -> None:
        """A ModelBuildError naming the plugin unless `logits` is N x num_classes x the input's
        spatial shape."""
        expected = (x.shape[0], self.num_classes, *x.shape[2:])
        if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ModelBuildError(
                f"model '{self.spec.name}' ({self.spec.origin}) returned {got} for an input of "
                f"shape {tuple(x.shape)}; a bioseg model must return logits of shape {expected}"
            )

    @torch.inference_mode()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities N x K x H x W for images N x C x H x W in [0, 1], as the readers
        give them (`trainers.data.read_image`), or N x K x D x H x W for a volume model's
        normalized volumes (scale 1): run at the model's `scale` through
        `forward_input` (channels matched, normalized by the saved mean and std) and answered at
        the input's size, in eval mode."""
        return at_size(forward_input(self, rescale(x, self.scale)), x.shape[-2:])

    @torch.inference_mode()
    def predict_normalized(self, x: Tensor) -> Tensor:
        """Class probabilities in eval mode for `x` already normalized by the model's mean and std
        and at the model's `scale` (nothing applied): sigmoid for one class, else softmax."""
        self.eval()
        return to_probabilities(self(x))

    def config(self) -> dict[str, object]:
        """What rebuilds this model: zoo name, classes, channels, options, normalization."""
        return {
            "model": self.spec.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "model_kwargs": dict(self.build_kwargs),
            "mean": list(self.spec.mean),
            "std": list(self.spec.std),
            **({"scale": self.scale} if self.scale != 1 else {}),
        }


def forward_input(
    model: SegmentationModel,
    images: Tensor,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Class probabilities N x K x *spatial of images N x C x *spatial in [0, 1] as read, at the
    model's scale (2D or with more spatial axes): brought to the model's channels
    (`match_channels`: grey expanded without a copy, colour averaged), normalized by its saved
    mean and std, and run through `forward`, which takes what `model.predict_normalized` takes
    (the default; an inference engine's from `engine_predict`). The one place where an image
    is made the model's input and run: the demo, batch prediction and validation all call it,
    a tile at a time."""
    x = match_channels(images, model.in_channels, axis=1)
    x = normalize(x, model.spec.mean, model.spec.std, axis=1)
    return (forward or model.predict_normalized)(x)


def _check_kwargs(spec: ModelSpec, kwargs: dict[str, object]) -> None:
    parameters = inspect.signature(spec.builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters} - {"num_classes", "in_channels", "pretrained"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"model '{spec.name}' does not accept {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(accepted)) or 'none'}"
        )


def create_model(
    name: str,
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    pretrained: bool = False,
    **kwargs: object,
) -> SegmentationModel:
    """Build registered model `name` (see `list_models()`), or any `timm/<encoder>`.

    `pretrained=True` starts the encoder from ImageNet weights, through torchvision's or timm's
    own loaders (a warm cache works offline). Extra keyword arguments go to the model's builder.
    """
    spec = get_spec(name)
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    if pretrained and not spec.pretrained_sources:
        raise ValueError(f"model '{name}' has no pretrained weights; use pretrained=False")
    build_kwargs = {**spec.default_kwargs, **kwargs}
    _check_kwargs(spec, build_kwargs)
    try:
        net = spec.builder(
            num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **build_kwargs
        )
    except PretrainedWeightsError:
        raise
    except (ValueError, TypeError, KeyError) as error:  # bad options: same type, model named
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise type(error)(f"model '{name}' ({spec.origin}): {message}") from error
    except Exception as error:
        raise ModelBuildError(
            f"building model '{name}' ({spec.origin}) failed: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(net, nn.Module):
        raise ModelBuildError(
            f"the builder of '{name}' ({spec.origin}) returned {type(net).__name__}, "
            "not a torch.nn.Module"
        )
    return SegmentationModel(
        net, spec, num_classes=num_classes, in_channels=in_channels, build_kwargs=build_kwargs
    )
