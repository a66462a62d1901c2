"""torchvision's VGG16, plain or with batch norm, optionally ImageNet-pretrained, as the backbone
of the FCN models."""

from __future__ import annotations

from torch import nn

from ._pretrained import adapt_input_conv, torchvision_state_dict

# backbone name -> torchvision's weights enum; both are ImageNet-pretrained by torchvision.
BACKBONES = {"vgg16": "VGG16_Weights", "vgg16_bn": "VGG16_BN_Weights"}
VGG16_SOURCES = tuple(f"torchvision:{enum}.IMAGENET1K_V1" for enum in BACKBONES.values())


def vgg16(
    in_channels: int, pretrained: bool, backbone: str = "vgg16"
) -> tuple[nn.Sequential, nn.Sequential | None]:
    """torchvision's VGG16 convolutions (`features`), the first taking `in_channels`, and its
    ImageNet classifier where `pretrained` (the FCN's fc6 and fc7 come from it), else None.

    `backbone="vgg16_bn"` adds batch norm after every conv: the variant that learns from
    random weights (see the README's from-scratch recipe). From scratch only the convolutions
    are built, initialised as torchvision initialises them: the classifier's 124M weights
    would take seconds to initialise for nothing.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
    import torchvision.models
    from torchvision.models import vgg

    if pretrained:
        model = getattr(torchvision.models, backbone)()
        weights = getattr(torchvision.models, BACKBONES[backbone]).IMAGENET1K_V1
        model.load_state_dict(torchvision_state_dict(weights))
        features, classifier = model.features, model.classifier
    else:
        features, classifier = (
            vgg.make_layers(vgg.cfgs["D"], batch_norm=backbone == "vgg16_bn"),
            None,
        )
        for layer in features.modules():  # as torchvision's VGG.__init__ does
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
    features[0] = adapt_input_conv(features[0], in_channels)
    return features, classifier


def pool_ends(features: nn.Sequential) -> list[int]:
    """The index after each max pooling of `features` (five for VGG16: /2 ... /32)."""
    return [i + 1 for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]


def freeze(module: nn.Module) -> None:
    """Stop gradients into `module`'s parameters."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
