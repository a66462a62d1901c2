"""Any timm model that supports `features_only`, as the encoder of a U-Net or an FCN head.

Addressed as `timm/<timm model name>` (e.g. `timm/resnet34`, `timm/convnext_tiny`); a few are
listed by `list_models()`, and any other features_only name works too. timm is imported only when
such a model is built or described.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import ModelSpec, add_spec, register_prefix
from zoo._blocks import conv_norm_relu, double_conv
from zoo._pretrained import timm_encoder

CURATED = {
    "resnet18": "ResNet-18 encoder, U-Net decoder",
    "resnet34": "ResNet-34 encoder, U-Net decoder (the classic U-Net/ResNet pairing)",
    "resnet50": "ResNet-50 encoder, U-Net decoder",
    "efficientnet_b0": "EfficientNet-B0 encoder, U-Net decoder (small and accurate)",
    "mobilenetv3_large_100": "MobileNetV3-Large encoder, U-Net decoder (fast on CPU)",
    "convnext_tiny": "ConvNeXt-Tiny encoder (first features at stride 4), U-Net decoder",
}
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class UNetDecoder(nn.Module):
    """Upsample the deepest features step by step, concatenating each shallower feature map.

    Encoders whose first features are coarser than the input (stride 2 for ResNet, 4 for ConvNeXt)
    get extra x2 stages without a skip, so the last stage is at the input's resolution.
    """

    def __init__(self, channels: list[int], reductions: list[int], widths: tuple[int, ...]) -> None:
        super().__init__()
        skip_channels = channels[-2::-1]
        self.reductions = reductions[-2::-1]
        stride = reductions[0]
        while stride > 1:  # extra x2 stages, without a skip, from the first stride down to 1
            stride //= 2
            self.reductions.append(stride)
            skip_channels.append(0)
        widths = widths + (widths[-1],) * (len(self.reductions) - len(widths))
        blocks, in_channels = [], channels[-1]
        for skip, width in zip(skip_channels, widths, strict=False):
            blocks.append(double_conv(in_channels + skip, width))
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        x = features[-1]
        skips = features[-2::-1]
        for i, (block, reduction) in enumerate(zip(self.blocks, self.reductions, strict=True)):
            if i < len(skips):
                target = skips[i].shape[-2:]
            else:
                target = (-(-size[0] // reduction), -(-size[1] // reduction))
            x = F.interpolate(x, size=target, mode="nearest")
            x = block(torch.cat([x, skips[i]], dim=1) if i < len(skips) else x)
        return x


class TimmSegmenter(nn.Module):
    """A timm features_only encoder with a U-Net decoder (default) or an FCN head."""

    def __init__(
        self,
        encoder_name: str,
        *,
        num_classes: int,
        in_channels: int,
        pretrained: bool,
        decoder: str = "unet",
        decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if decoder not in ("unet", "fcn"):
            raise ValueError(f"decoder must be 'unet' or 'fcn', got {decoder!r}")
        self.encoder = timm_encoder(encoder_name, pretrained=pretrained, in_chans=in_channels)
        self.frozen = freeze_backbone
        if freeze_backbone:
            self.encoder.requires_grad_(False)
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        if decoder == "unet":
            self.decoder = UNetDecoder(channels, reductions, tuple(decoder_channels))
            self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 3, padding=1)
        else:
            self.decoder = None
            width = max(channels[-1] // 4, 16)
            self.head = nn.Sequential(
                *conv_norm_relu(channels[-1], width),
                nn.Dropout(0.1),
                nn.Conv2d(width, num_classes, 1),
            )

    def train(self, mode: bool = True) -> TimmSegmenter:
        """A frozen encoder stays in eval mode: its batch-norm statistics do not move either."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        features = self.encoder(x)
        y = features[-1] if self.decoder is None else self.decoder(features, size)
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


def _normalization(encoder_name: str) -> dict[str, tuple[float, ...]]:
    """The mean and std of timm's default pretrained weights for `encoder_name` (imports timm)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(encoder_name) if timm.is_model(encoder_name) else None
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std)} if cfg else {}


def _spec(name: str, summary: str | None = None) -> ModelSpec:
    """Curated names (with a summary) use ImageNet statistics; others ask timm for theirs."""
    encoder_name = name.removeprefix("timm/")
    return ModelSpec(
        name=name,
        summary=summary or f"timm {encoder_name} encoder, U-Net decoder",
        builder=functools.partial(TimmSegmenter, encoder_name),
        family="timm",
        min_size=32,
        pretrained_sources=(f"timm:{encoder_name} (Hugging Face Hub, timm's default tag)",),
        origin="built-in",
        module=__name__,
        **({} if summary else _normalization(encoder_name)),
    )


for _name, _summary in CURATED.items():
    add_spec(_spec(f"timm/{_name}", _summary))
register_prefix("timm/", _spec)
