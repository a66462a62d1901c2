"""ImageNet weights through torchvision's and timm's own loaders, with actionable errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be had (no network and no cached copy)."""


def torchvision_state_dict(weights: object) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision `Weights` enum member, from `$TORCH_HOME` or the network.

    Uses `torch.hub.load_state_dict_from_url` as torchvision does (a cached file is used as is),
    but with `weights_only=True` so a tampered file cannot run code.
    """
    url = weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        return torch.hub.load_state_dict_from_url(
            url, progress=True, check_hash=True, weights_only=True
        )
    except pickle.UnpicklingError as error:  # weights_only refused something that is not data
        raise PretrainedWeightsError(
            f"Refused {cached}: it is not a plain state dict of tensors and could run code when "
            f"loaded ({str(error).splitlines()[0]}). Delete it; it is downloaded again from {url}."
        ) from None
    except OSError as error:  # URLError, socket errors, a missing or unreadable file
        raise PretrainedWeightsError(
            f"Could not load ImageNet weights {weights} ({type(error).__name__}: {error}). "
            f"They are downloaded from {url} to {cached}. With no network, copy that file there "
            "(set TORCH_HOME to use another cache folder), or pass pretrained=False."
        ) from error


def timm_encoder(name: str, *, pretrained: bool, **kwargs: object) -> nn.Module:
    """`timm.create_model(name, features_only=True, ...)` with clear errors when it fails."""
    import timm
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise ValueError(
            f"timm has no model '{name}'"
            + (f"; similar names: {', '.join(close)}" if close else "")
            + ". timm.list_models() lists them all."
        )
    try:
        return timm.create_model(name, features_only=True, pretrained=pretrained, **kwargs)
    except (OSError, LocalEntryNotFoundError, HfHubHTTPError) as error:
        from huggingface_hub.constants import HF_HUB_CACHE

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) or name
        folder = Path(HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
        raise PretrainedWeightsError(
            f"Could not load timm's ImageNet weights for '{name}' ({type(error).__name__}: "
            f"{error}). timm reads model.safetensors of the Hub repository {hub_id}, cached under "
            f"{folder}. With no network, run `hf download {hub_id} model.safetensors` on a "
            "machine that has one and copy that folder there (set HF_HOME to use another "
            "cache), or pass pretrained=False."
        ) from error
    except RuntimeError as error:
        if "features_only" not in str(error):
            raise
        raise ValueError(
            f"timm model '{name}' cannot be used as an encoder: it does not support "
            "features_only. Pick a convolutional or hierarchical model (resnet, efficientnet, "
            "convnext, mobilenetv3, regnet, ...)."
        ) from error


def adapt_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of an RGB input conv taking `in_channels` channels, keeping what it learnt.

    The weights are timm's `adapt_input_conv`: one channel gets the sum of the RGB filters (a
    grey image seen as R=G=B answers as before); other counts repeat the RGB filters cyclically,
    scaled by 3 / in_channels.
    """
    from timm.models import adapt_input_conv as adapted_weight

    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(adapted_weight(in_channels, conv.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
