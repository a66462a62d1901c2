"""One suite over every registered model: shapes, gradients, frozen backbones, contract checks."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.nn.functional as F

import zoo

EXTRA_TIMM = ["timm/vgg11"]  # not curated: proves any features_only name works (first stride 1)
ALL_MODELS = zoo.list_models() + EXTRA_TIMM


@functools.lru_cache(maxsize=2)
def built(name: str, in_channels: int) -> zoo.SegmentationModel:
    torch.manual_seed(0)
    return zoo.create_model(name, num_classes=2, in_channels=in_channels)


def accepts(name: str, option: str) -> bool:
    return option in inspect.signature(zoo.get_spec(name).builder).parameters


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_matches_input_size_and_gradients_reach_every_layer(
    name: str, in_channels: int
) -> None:
    model = built(name, in_channels).train()
    for height, width in [(37, 53), (64, 33)]:
        x = torch.randn(2, in_channels, height, width)
        assert model(x).shape == (2, 2, height, width)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "a model must have trainable parameters"
    target = torch.randint(0, 2, (2, height, width))
    optimizer = torch.optim.SGD([p for _, p in trainable], lr=1e-3)
    for _ in range(2):  # a step first: zero-initialised layers (FCN's scores) pass no gradient on
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    head_name, head = trainable[-1]
    assert head.grad.abs().sum() > 0, f"the head {head_name} got a zero gradient"
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if accepts(n, "freeze_backbone")])
def test_frozen_backbone_stays_fixed_through_an_optimizer_step(name: str) -> None:
    model = zoo.create_model(name, num_classes=1, freeze_backbone=True)
    encoder = model.net.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}  # batch-norm buffers too
    assert not any(p.requires_grad for p in encoder.parameters())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    x = torch.randn(2, 3, 48, 48)
    model.train()(x).square().mean().backward()
    optimizer.step()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(224, 224), (250, 333)])
def test_fcn_answers_at_input_size(name: str, size: tuple[int, int]) -> None:
    model = zoo.create_model(name, num_classes=3, fc_channels=64).eval()
    assert model.predict(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_fcn_upsampling_starts_bilinear() -> None:
    from zoo.fcn import bilinear_upsampling

    layer = bilinear_upsampling(2, factor=2)
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])  # 1 - |i - 1.5| / 2 for i = 0..3
    assert torch.allclose(layer.weight[0, 0], ramp[:, None] * ramp[None, :])
    assert torch.equal(layer.weight[0, 1], torch.zeros(4, 4))  # no mixing between classes
    # Away from the border, x2 bilinear upsampling of a ramp image keeps it a ramp.
    image = torch.arange(8.0).repeat(8, 1)[None, None].repeat(1, 2, 1, 1)
    up = layer(image)[0, 0, 4:-4, 4:-4]
    assert torch.allclose(up.diff(dim=1), torch.full_like(up.diff(dim=1), 0.5))


def test_vgg16_fcn_returns_224_for_224_where_the_report_returned_112() -> None:
    model = built("vgg16_fcn", 3)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 2, 224, 224)
    report = zoo.create_model("vgg16_fcn_report", num_classes=3).net
    assert report.conv5.kernel_size == (435, 435) and report.conv5.padding == (217, 217)
    assert report.conv5.weight.numel() == 512 * 3 * 435 * 435  # the report's 290M weights
    upsampled = report.up(torch.randn(1, 3, 7, 7))
    assert upsampled.shape == (1, 8, 112, 112)  # four x2 stages on a /32 map: half the input


def test_report_conv_equals_the_full_435x435_convolution() -> None:
    from zoo.vgg16_fcn import ReportConv

    torch.manual_seed(0)
    conv = ReportConv()
    x = torch.randn(1, 512, 2, 3)
    full = F.conv2d(x, conv.weight, conv.bias, padding=217)
    assert torch.allclose(conv(x), full, atol=1e-5)


@pytest.mark.parametrize("decoder", ["unet", "fcn"])
@pytest.mark.parametrize("encoder", ["timm/convnext_tiny", "timm/vgg11"])
def test_timm_encoders_first_at_stride_4_and_1_give_full_resolution(
    encoder: str, decoder: str
) -> None:
    model = zoo.create_model(encoder, num_classes=1, decoder=decoder).eval()
    reductions = model.net.encoder.feature_info.reduction()
    assert reductions[0] == {"timm/convnext_tiny": 4, "timm/vgg11": 1}[encoder]
    assert model(torch.randn(1, 3, 70, 45)).shape == (1, 1, 70, 45)


def test_predict_gives_probabilities_in_eval_mode() -> None:
    model = zoo.create_model("timm/resnet18", num_classes=3).train()
    probabilities = model.predict(torch.randn(2, 3, 64, 64))
    assert not model.training
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)
    binary = zoo.create_model("timm/resnet18", num_classes=1).predict(torch.randn(1, 3, 32, 32))
    assert binary.min() >= 0 and binary.max() <= 1


def test_config_records_how_to_rebuild() -> None:
    model = zoo.create_model("fcn8s", num_classes=4, in_channels=1, fc_channels=32)
    assert model.config() == {
        "model": "fcn8s",
        "num_classes": 4,
        "in_channels": 1,
        "model_kwargs": {"fc_channels": 32},
        "mean": list(zoo.IMAGENET_MEAN),
        "std": list(zoo.IMAGENET_STD),
    }


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: zoo.create_model("fcn8"), KeyError, "Did you mean: fcn8s"),
        (lambda: zoo.create_model("fcn8s", colour="red"), TypeError, "fc_channels"),
        (lambda: zoo.create_model("fcn8s", num_classes=0), ValueError, "positive integer"),
        (lambda: zoo.create_model("timm/resnet343"), ValueError, "timm has no model"),
        (lambda: zoo.create_model("timm/resnet18", decoder="x"), ValueError, "'unet' or 'fcn'"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_wrong_input_is_refused_with_the_expected_shape() -> None:
    model = built("timm/resnet18", 3)
    with pytest.raises(ValueError, match=r"N x 3 x H x W, got shape \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 16, 64))
