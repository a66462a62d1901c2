"""The report's custom VGG16-FCN: a frozen VGG16 encoder, a conv, transposed convs and two convs.

`vgg16_fcn` is the corrected model; `vgg16_fcn_report` keeps the published layers to reproduce the
report. What the report got wrong, and what `vgg16_fcn` does instead:

* Its four x2 transposed convs after VGG16's /32 features return 112x112 for a 224x224 input.
  `vgg16_fcn` uses five exact x2 stages (kernel 4, stride 2, padding 1) and pads the input to a
  multiple of 32, then crops, so it answers at the input's resolution for any size.
* Its first conv has a 435x435 kernel (2 * (224 - 7) + 1, 290M weights) to reach across a 7x7
  map. `vgg16_fcn` uses a 3x3 conv: the transposed convs do the spatial work.
"""

from __future__ import annotations

import itertools

import torch.nn.functional as F
from torch import Tensor, nn

from zoo import register_model
from zoo._blocks import conv_norm_relu, padded_forward
from zoo._vgg import VGG16_SOURCES, freeze, vgg16

_REPORT_KERNEL = 2 * (224 - 7) + 1  # 435: the report's conv5 kernel, computed for 224x224 inputs


def _up(in_channels: int, out_channels: int, norm: bool = False) -> nn.Sequential:
    """An exact x2 upsampling stage, batch-normalised when `norm`."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
        nn.BatchNorm2d(out_channels) if norm else nn.Identity(),
        nn.ReLU(inplace=True),
    )


def _vgg16_encoder(
    in_channels: int, pretrained: bool, freeze_backbone: bool, backbone: str = "vgg16"
) -> nn.Module:
    encoder = vgg16(in_channels, pretrained, backbone)[0]
    if freeze_backbone:
        freeze(encoder)
    return encoder


@register_model(
    "vgg16_fcn",
    summary="The report's VGG16-FCN, corrected: 3x3 bottleneck, five x2 transposed convs",
    family="vgg16_fcn",
    pretrained_sources=VGG16_SOURCES,
)
class VGG16FCN(nn.Module):
    """VGG16 features (/32) -> 3x3 conv -> five x2 transposed convs -> two 3x3 convs."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        pretrained: bool,
        freeze_backbone: bool = True,
        bottleneck_channels: int = 32,
        up_channels: tuple[int, ...] = (64, 32, 16, 8, 8),
        backbone: str = "vgg16",
        decoder_norm: bool = False,
    ) -> None:
        super().__init__()
        up_channels = tuple(up_channels)  # a JSON config gives a list
        if len(up_channels) != 5:
            raise ValueError(f"up_channels needs 5 entries (/32 -> /1), got {up_channels}")
        self.encoder = _vgg16_encoder(in_channels, pretrained, freeze_backbone, backbone)
        self.conv5 = conv_norm_relu(512, bottleneck_channels, norm=decoder_norm, bias=True)
        widths = (bottleneck_channels, *up_channels)
        self.up = nn.Sequential(*(_up(a, b, decoder_norm) for a, b in itertools.pairwise(widths)))
        self.conv6 = conv_norm_relu(up_channels[-1], up_channels[-1], norm=decoder_norm, bias=True)
        self.conv7 = nn.Conv2d(up_channels[-1], num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return padded_forward(x, 32, self._forward)

    def _forward(self, x: Tensor) -> Tensor:
        return self.conv7(self.conv6(self.up(self.conv5(self.encoder(x)))))


class ReportConv(nn.Conv2d):
    """The report's conv5, 512 -> 3 with a 435x435 kernel and 'same' padding (217).

    Computed exactly, but only over the taps that can touch the feature map: on an h x w map a
    'same' conv reaches at most h - 1 rows and w - 1 columns from the centre, so the kernel is
    cropped to (2h - 1) x (2w - 1) around it. The result equals the full convolution; the memory
    and time do not explode (the full one needs about 19 GB of im2col buffer at 224x224).
    """

    def __init__(self) -> None:
        half = _REPORT_KERNEL // 2
        super().__init__(512, 3, _REPORT_KERNEL, padding=half)

    def forward(self, x: Tensor) -> Tensor:
        half = _REPORT_KERNEL // 2
        reach_h, reach_w = min(x.shape[-2] - 1, half), min(x.shape[-1] - 1, half)
        weight = self.weight[
            ..., half - reach_h : half + reach_h + 1, half - reach_w : half + reach_w + 1
        ]
        return F.conv2d(x, weight, self.bias, padding=(reach_h, reach_w))


@register_model(
    "vgg16_fcn_report",
    summary="The report's VGG16-FCN as published (435x435 conv5, 112x112 out, resized to input)",
    family="vgg16_fcn",
    min_size=32,
    pretrained_sources=VGG16_SOURCES[:1],
)
class VGG16FCNReport(nn.Module):
    """The report's layers as published, with the 112x112 output resized to the input."""

    def __init__(
        self, *, num_classes: int, in_channels: int, pretrained: bool, freeze_backbone: bool = True
    ) -> None:
        super().__init__()
        self.encoder = _vgg16_encoder(in_channels, pretrained, freeze_backbone)
        self.conv5 = ReportConv()
        self.up = nn.Sequential(_up(3, 64), _up(64, 32), _up(32, 16), _up(16, 8))
        self.conv6 = nn.Sequential(nn.Conv2d(8, 3, 3, padding=1), nn.ReLU(inplace=True))
        self.conv7 = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv7(self.conv6(self.up(F.relu(self.conv5(self.encoder(x))))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
