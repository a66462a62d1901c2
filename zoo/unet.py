"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), trained from scratch.

The classic encoder-decoder with skip connections, with 'same' padding and batch norm so the
output has the input's size (the input is padded to a multiple of 2**depth, then cropped). Small
widths train well on a CPU: `base_channels=16` is about 1.9M parameters.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo import register_model
from zoo._blocks import double_conv, padded_forward


@register_model(
    "unet",
    summary="U-Net (Ronneberger et al. 2015) with batch norm, from scratch; width and depth set",
    family="unet",
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)
class UNet(nn.Module):
    """`depth` down steps (max-pool, double conv) and as many up steps (transposed conv, concat).

    There are no pretrained weights (the registry refuses `pretrained=True`).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        pretrained: bool = False,
        base_channels: int = 32,
        depth: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(f"depth and base_channels must be >= 1, got {depth}, {base_channels}")
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.multiple = 2**depth
        self.encoder = nn.ModuleList(
            [double_conv(in_channels, widths[0])]
            + [double_conv(a, b) for a, b in itertools.pairwise(widths)]
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in itertools.pairwise(widths)
        )
        self.decoder = nn.ModuleList(double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return padded_forward(x, self.multiple, self._forward)

    def _forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(reversed(self.up), reversed(self.decoder), strict=True):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
