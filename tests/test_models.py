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

# As timm's generic tests do: every model built small, so the suite over all of them stays cheap.
# Keyed by option, not by model, so a new model with one of these options is built small too.
SMALL_OPTIONS: dict[str, object] = {
    "fc_channels": 16,  # FCN's fc6/fc7: 4096 by default, 102M weights
    "base_channels": 4,
    "bottleneck_channels": 8,
    "up_channels": (8, 8, 8, 8, 8),
    "decoder_channels": (16, 16, 16, 16, 16),
}
PARAMETER_CAP = 30_000_000  # a fixed encoder (VGG16's 15M, ConvNeXt-Tiny's 28M) and a small rest
OVER_CAP = {"vgg16_fcn_report": "its 435x435 conv5 (290M weights) has no size option"}
"""Models that no small option brings under the cap: the default run checks their output shapes
on the meta device (no memory, no initialisation); the full suite runs them in `-m slow`."""


def capped(names: list[str]) -> list:
    """`names`, those in OVER_CAP marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in OVER_CAP else n for n in names]


def accepts(name: str, option: str) -> bool:
    return option in inspect.signature(zoo.get_spec(name).builder).parameters


def small(name: str, **kwargs: object) -> dict[str, object]:
    """The SMALL_OPTIONS that model `name` accepts, then `kwargs`."""
    return {**{k: v for k, v in SMALL_OPTIONS.items() if accepts(name, k)}, **kwargs}


@functools.lru_cache(maxsize=2)  # the two channel counts of one model
def built(name: str, in_channels: int) -> zoo.SegmentationModel:
    torch.manual_seed(0)
    return zoo.create_model(name, num_classes=2, in_channels=in_channels, **small(name))


@functools.cache
def for_shapes(name: str, backbone: str = "vgg16") -> zoo.SegmentationModel:
    """A small model in eval mode, shared by the tests that only look at shapes and layers."""
    return zoo.create_model(name, num_classes=2, backbone=backbone, **small(name)).eval()


def on_meta(name: str, **kwargs: object) -> zoo.SegmentationModel:
    """Model `name` on the meta device: its layers and output shapes, no memory or weights."""
    with torch.device("meta"):
        return zoo.create_model(name, **kwargs)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", capped(ALL_MODELS))
def test_output_matches_input_size_and_gradients_reach_every_layer(
    name: str, in_channels: int
) -> None:
    model = built(name, in_channels).train()
    size = sum(p.numel() for p in model.parameters())
    assert name in OVER_CAP or size <= PARAMETER_CAP, (
        f"{name} has {size:,} parameters with {small(name)}, over the test cap of "
        f"{PARAMETER_CAP:,}: give it an option in SMALL_OPTIONS, or list it in OVER_CAP"
    )
    volume = model.spec.spatial_dims == 3  # odd sizes along each axis, as for images
    for shape in [(9, 13, 10), (16, 8, 12)] if volume else [(37, 53), (64, 33)]:
        x = torch.randn(2, in_channels, *shape)
        with torch.no_grad():
            assert model(x).shape == (2, 2, *shape)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "a model must have trainable parameters"
    target = torch.randint(0, 2, (2, *shape))
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


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", sorted(OVER_CAP))
def test_models_over_the_cap_answer_at_input_size_on_the_meta_device(
    name: str, in_channels: int
) -> None:
    model = on_meta(name, num_classes=2, in_channels=in_channels)
    assert sum(p.numel() for p in model.parameters()) > PARAMETER_CAP  # else: off OVER_CAP
    for height, width in [(37, 53), (64, 33)]:
        x = torch.randn(2, in_channels, height, width, device="meta")
        assert model.train()(x).shape == (2, 2, height, width)


@pytest.mark.parametrize("name", capped([n for n in ALL_MODELS if accepts(n, "freeze_backbone")]))
def test_frozen_backbone_stays_fixed_through_an_optimizer_step(name: str) -> None:
    model = zoo.create_model(name, num_classes=1, **small(name, freeze_backbone=True))
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
    assert for_shapes(name).predict(torch.randn(1, 3, *size)).shape == (1, 2, *size)


VGG_MODELS = ["fcn32s", "fcn16s", "fcn8s", "vgg16_fcn"]


@pytest.mark.parametrize("backbone", ["vgg16", "vgg16_bn"])
@pytest.mark.parametrize("name", VGG_MODELS)
def test_every_vgg_backbone_variant_answers_at_input_size(name: str, backbone: str) -> None:
    model = for_shapes(name, backbone)
    batch_norms = [m for m in model.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(batch_norms) == (13 if backbone == "vgg16_bn" else 0)  # one per VGG16 conv
    for size in [(32, 32), (61, 47)]:
        assert model.predict(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_decoder_norm_lets_a_vgg16_fcn_from_scratch_start_with_a_varying_output() -> None:
    # Without it the eight plain layers after the /32 map wash out the spatial signal: at
    # initialisation every pixel gets nearly the same logit, and Dice + IoU training from
    # there stays at "all foreground" (seen on DSB 2018: validation Dice fixed at 0.2268).
    spread = {}
    for norm in (False, True):
        torch.manual_seed(0)
        model = zoo.create_model(
            "vgg16_fcn",
            num_classes=1,
            backbone="vgg16_bn",
            freeze_backbone=False,
            decoder_norm=norm,
        ).train()
        spread[norm] = model(torch.randn(2, 3, 64, 64)).std(dim=(2, 3)).mean().item()
    assert spread[False] < 0.02 < 0.1 < spread[True]


def test_fcn_skips_come_from_pool3_and_pool4_with_or_without_batch_norm() -> None:
    for backbone in ("vgg16", "vgg16_bn"):
        net = for_shapes("fcn8s", backbone).net
        assert isinstance(net.encoder["to_pool3"][-1], torch.nn.MaxPool2d)
        assert isinstance(net.encoder["to_pool4"][-1], torch.nn.MaxPool2d)
        with torch.no_grad():
            pool3 = net.encoder["to_pool3"](torch.randn(1, 3, 64, 64))
            assert pool3.shape[1] == 256 and net.encoder["to_pool4"](pool3).shape[1] == 512


@pytest.mark.parametrize("name", VGG_MODELS)
def test_an_unknown_backbone_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match="vgg16, vgg16_bn; got 'vgg19'"):
        zoo.create_model(name, num_classes=1, backbone="vgg19")


@pytest.mark.parametrize(
    ("saved", "loaded", "named"),
    [
        ({"backbone": "vgg16"}, {"backbone": "vgg16_bn"}, "missing keys net.encoder"),
        ({"fc_channels": 16}, {"fc_channels": 32}, r"other shapes for net\.fc\.0\.weight"),
    ],
)
def test_a_checkpoint_of_another_variant_is_refused_naming_the_tensors(
    tmp_path, saved: dict, loaded: dict, named: str
) -> None:
    import json

    zoo.save_pretrained(
        zoo.create_model("fcn8s", num_classes=1, **{"fc_channels": 16, **saved}), tmp_path
    )
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_kwargs"] = {**config["model_kwargs"], **loaded}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=named):
        zoo.from_pretrained(tmp_path)


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
    assert for_shapes("vgg16_fcn").predict(torch.randn(1, 3, 224, 224)).shape == (1, 2, 224, 224)
    report = on_meta("vgg16_fcn_report", num_classes=3).net
    assert report.conv5.kernel_size == (435, 435) and report.conv5.padding == (217, 217)
    assert report.conv5.weight.numel() == 512 * 3 * 435 * 435  # the report's 290M weights
    upsampled = report.up(torch.randn(1, 3, 7, 7, device="meta"))
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
    model = zoo.create_model(encoder, num_classes=1, **small(encoder, decoder=decoder)).eval()
    reductions = model.net.encoder.feature_info.reduction()
    assert reductions[0] == {"timm/convnext_tiny": 4, "timm/vgg11": 1}[encoder]
    assert model(torch.randn(1, 3, 70, 45)).shape == (1, 1, 70, 45)


def test_predict_gives_probabilities_in_eval_mode() -> None:
    model = zoo.create_model("timm/resnet18", num_classes=3, **small("timm/resnet18")).train()
    probabilities = model.predict(torch.randn(2, 3, 64, 64))
    assert not model.training
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)
    binary = zoo.create_model("timm/resnet18", num_classes=1, **small("timm/resnet18"))
    binary = binary.predict(torch.randn(1, 3, 32, 32))
    assert binary.min() >= 0 and binary.max() <= 1


def test_config_records_how_to_rebuild() -> None:
    model = on_meta("fcn8s", num_classes=4, in_channels=1, fc_channels=32)
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
    with pytest.raises(ValueError, match="at least 32 pixels a side, got 16x64"):
        model(torch.randn(1, 3, 16, 64))


def test_python_m_zoo_lists_each_model_s_options_with_their_defaults(capsys) -> None:
    from zoo.__main__ import main

    main(["vgg16_fcn"])
    row = capsys.readouterr().out.splitlines()[-1]
    for option in ("`backbone='vgg16'`", "`decoder_norm=False`", "`freeze_backbone=True`"):
        assert option in row
    assert "num_classes" not in row and "pretrained=" not in row
