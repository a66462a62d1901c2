"""torchvision's VGG16, plain or with batch norm, optionally ImageNet-pretrained, as the backbone
of the FCN models."""

from __future__ import annotations

from torch import nn

from ._pretrained import adapt_input_conv, torchvision_state_dict

# backbone name -> torchvision's weights enum; both are ImageNet-pretrained by torchvision.
BACKBONES = {"vgg16": "VGG16_Weights", "vgg16_bn": "VGG16_BN_Weights"}
VGG16_SOURCES = tuple(f"torchvision:{enum}.IMAGENET1K_V1" for enum in BACKBONES.values())


def vgg16(in_channels: int, pretrained: bool, backbone: str = "vgg16") -> nn.Module:
    """A torchvision VGG16 (features + classifier) with its first conv taking `in_channels`.

    `backbone="vgg16_bn"` adds batch norm after every conv: the variant that learns from
    random weights (see the README's from-scratch recipe).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
    import torchvision.models

    model = getattr(torchvision.models, backbone)()
    if pretrained:
        weights = getattr(torchvision.models, BACKBONES[backbone]).IMAGENET1K_V1
        model.load_state_dict(torchvision_state_dict(weights))
    model.features[0] = adapt_input_conv(model.features[0], in_channels)
    return model


def pool_ends(features: nn.Sequential) -> list[int]:
    """The index after each max pooling of `features` (five for VGG16: /2 ... /32)."""
    return [i + 1 for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]


def freeze(module: nn.Module) -> None:
    """Stop gradients into `module`'s parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
