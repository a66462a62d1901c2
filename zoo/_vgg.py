"""torchvision's VGG16, optionally ImageNet-pretrained, as the backbone of the FCN models."""

from __future__ import annotations

from torch import nn

from ._pretrained import adapt_input_conv, torchvision_state_dict

VGG16_SOURCE = "torchvision:VGG16_Weights.IMAGENET1K_V1"


def vgg16(in_channels: int, pretrained: bool) -> nn.Module:
    """A torchvision VGG16 (features + classifier) with its first conv taking `in_channels`."""
    from torchvision.models import VGG16_Weights
    from torchvision.models import vgg16 as tv_vgg16

    model = tv_vgg16()
    if pretrained:
        model.load_state_dict(torchvision_state_dict(VGG16_Weights.IMAGENET1K_V1))
    model.features[0] = adapt_input_conv(model.features[0], in_channels)
    return model


def freeze(module: nn.Module) -> None:
    """Stop gradients into `module`'s parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
