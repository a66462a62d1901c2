"""3D U-Net (Çiçek et al., MICCAI 2016) for volumes, in the form nnU-Net made the field's default.

Each level is two 3x3x3 convolutions with instance norm and leaky ReLU (nnU-Net's blocks: batch
norm is unreliable at the batches of two a volume allows); down by a strided convolution, up by
a transposed one, skips concatenated. Widths double per level up to `max_channels`. The input is
padded to a multiple of 2**depth on each axis and the output cropped back, so any size works.
`base_channels=16, depth=3` is about 1.4M parameters, trainable on a CPU.
"""

from __future__ import annotations

import itertools

from torch import Tensor, cat, nn

from zoo import register_model
from zoo._blocks import padded_forward


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """(3x3x3 conv, instance norm, leaky ReLU) twice, the first with `stride`."""
    layers: list[nn.Module] = []
    for index, channels in enumerate((in_channels, out_channels)):
        layers += [
            nn.Conv3d(channels, out_channels, 3, stride=stride if index == 0 else 1, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        ]
    return nn.Sequential(*layers)


@register_model(
    "unet3d",
    summary="3D U-Net for volumes (nnU-Net's blocks: instance norm, leaky ReLU, strided convs)",
    family="unet",
    spatial_dims=3,
    mean=(0.0,),
    std=(1.0,),
)
class UNet3D(nn.Module):
    """`depth` strided down steps and as many transposed-conv up steps, on N x C x D x H x W.

    Volumes come z-scored by the trainers (`trainers.volumes.intensity`), so the model's own
    normalization is the identity (mean 0, std 1). No pretrained weights.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        pretrained: bool = False,
        base_channels: int = 16,
        depth: int = 3,
        max_channels: int = 320,
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(f"depth and base_channels must be >= 1, got {depth}, {base_channels}")
        widths = [min(base_channels * 2**level, max_channels) for level in range(depth + 1)]
        self.multiple = 2**depth
        self.encoder = nn.ModuleList(
            [conv_block(in_channels, widths[0])]
            + [conv_block(a, b, stride=2) for a, b in itertools.pairwise(widths)]
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(b, a, 2, stride=2) for a, b in itertools.pairwise(widths)
        )
        self.decoder = nn.ModuleList(conv_block(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv3d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return padded_forward(x, self.multiple, self._forward)

    def _forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(reversed(self.up), reversed(self.decoder), strict=True):
            x = block(cat([up(x), skips.pop()], dim=1))
        return self.head(x)
