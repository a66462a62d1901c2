"""Layers the built-in decoders share: the conv block, and running a network on an input padded
to a multiple of its total stride, cropped back to the input's size."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def conv_norm_relu(
    in_channels: int, out_channels: int, *, norm: bool = True, bias: bool | None = None
) -> nn.Sequential:
    """3x3 'same' conv, batch norm (or nothing when not `norm`), ReLU. The conv has a bias
    only without a norm, unless `bias` says otherwise."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm if bias is None else bias),
        nn.BatchNorm2d(out_channels) if norm else nn.Identity(),
        nn.ReLU(inplace=True),
    )


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv-norm-ReLU blocks, U-Net's unit: (conv, norm, ReLU) x 2 as one flat Sequential."""
    return nn.Sequential(
        *conv_norm_relu(in_channels, out_channels), *conv_norm_relu(out_channels, out_channels)
    )


def padded_forward(x: Tensor, multiple: int, forward: Callable[[Tensor], Tensor]) -> Tensor:
    """`forward` on `x` zero-padded at the end of each spatial axis (H, W; or D, H, W) to a
    multiple of `multiple`, cropped back to `x`'s size: a network with total stride `multiple`
    answers at any size."""
    spatial = x.shape[2:]
    padding = [amount for side in reversed(spatial) for amount in (0, -side % multiple)]
    return forward(F.pad(x, padding))[(..., *(slice(0, side) for side in spatial))]
