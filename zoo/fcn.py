"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, CVPR 2015) on torchvision's VGG16.

As in the paper: fc6/fc7 become 7x7 and 1x1 convolutions (copied from the ImageNet classifier when
pretrained), zero-initialised 1x1 score layers, skip fusion from pool4 (16s) and pool3 (8s), and
transposed-conv upsampling initialised to bilinear interpolation and left learnable. The first conv
pads by 100 and pooling rounds up, so the crops (5, 9, and 19/27/31 for the output) align the maps
exactly and the output has the input's size for any input size.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from zoo import register_model
from zoo._vgg import VGG16_SOURCES, freeze, pool_ends, vgg16

# Offsets of the paper's Caffe crop layers for a first conv padded by 100.
_POOL4_OFFSET, _POOL3_OFFSET = 5, 9
_OUTPUT_OFFSET = {32: 19, 16: 27, 8: 31}


def bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A transposed conv upsampling each channel by `factor`, initialised to bilinear."""
    size = 2 * factor
    layer = nn.ConvTranspose2d(channels, channels, size, stride=factor, bias=False)
    center = factor - 0.5  # kernel size 2 * factor is even
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return layer


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _crop(x: Tensor, offset: int, like: Tensor) -> Tensor:
    return x[..., offset : offset + like.shape[-2], offset : offset + like.shape[-1]]


class FCN(nn.Module):
    """FCN-`stride`s: the deepest score map upsampled, fused with pool4 (16s) and pool3 (8s)."""

    def __init__(
        self,
        stride: int,
        *,
        num_classes: int,
        in_channels: int,
        pretrained: bool,
        fc_channels: int = 4096,
        freeze_backbone: bool = False,
        backbone: str = "vgg16",
    ) -> None:
        super().__init__()
        if stride not in _OUTPUT_OFFSET:
            raise ValueError(f"FCN stride must be one of 32, 16, 8; got {stride}")
        features, classifier = vgg16(in_channels, pretrained, backbone)
        features[0].padding = (100, 100)
        for layer in features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
        self.stride = stride
        pool3, pool4 = pool_ends(features)[2:4]
        self.encoder = nn.ModuleDict(
            {
                "to_pool3": features[:pool3],
                "to_pool4": features[pool3:pool4],
                "to_pool5": features[pool4:],
            }
        )
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc_channels, 7),
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
            nn.Conv2d(fc_channels, fc_channels, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
        )
        if classifier is not None and fc_channels == 4096:
            with torch.no_grad():
                self.fc[0].weight.copy_(classifier[0].weight.view(4096, 512, 7, 7))
                self.fc[0].bias.copy_(classifier[0].bias)
                self.fc[3].weight.copy_(classifier[3].weight.view(4096, 4096, 1, 1))
                self.fc[3].bias.copy_(classifier[3].bias)
        if freeze_backbone:
            freeze(self.encoder)
        self.score_fr = _score(fc_channels, num_classes)
        if stride == 32:
            self.upscore = bilinear_upsampling(num_classes, 32)
            return
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.score_pool4 = _score(512, num_classes)
        if stride == 16:
            self.upscore = bilinear_upsampling(num_classes, 16)
            return
        self.upscore_pool4 = bilinear_upsampling(num_classes, 2)
        self.score_pool3 = _score(256, num_classes)
        self.upscore = bilinear_upsampling(num_classes, 8)

    def forward(self, x: Tensor) -> Tensor:
        pool3 = self.encoder["to_pool3"](x)
        pool4 = self.encoder["to_pool4"](pool3)
        score = self.score_fr(self.fc(self.encoder["to_pool5"](pool4)))
        if self.stride <= 16:
            score = self.upscore2(score)
            score = score + _crop(self.score_pool4(pool4), _POOL4_OFFSET, score)
        if self.stride == 8:
            score = self.upscore_pool4(score)
            score = score + _crop(self.score_pool3(pool3), _POOL3_OFFSET, score)
        return _crop(self.upscore(score), _OUTPUT_OFFSET[self.stride], x)


for _stride, _summary in (
    (32, "FCN-32s (Long et al. 2015): VGG16, fc6/fc7 as convs, one x32 learnable upsampling"),
    (16, "FCN-16s (Long et al. 2015): FCN-32s plus a pool4 skip, x2 then x16 upsampling"),
    (8, "FCN-8s (Long et al. 2015): FCN-16s plus a pool3 skip, x2, x2 then x8 upsampling"),
):
    register_model(
        f"fcn{_stride}s", summary=_summary, family="fcn", pretrained_sources=VGG16_SOURCES
    )(functools.partial(FCN, _stride))
