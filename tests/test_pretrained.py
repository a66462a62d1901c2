"""pretrained=True through torchvision's and timm's own loaders, offline, on planted caches.

No ImageNet weights can be downloaded here, so each test plants a state dict it made itself under
the cache file name the library looks for, and checks that exactly those weights arrive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import zoo

NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def plant_torchvision(torch_home: Path, name: str) -> dict[str, torch.Tensor]:
    """A random state dict of torchvision's model `name`, saved where torchvision's cache looks
    for its ImageNet weights (shapes from the meta device: no initialisation of 138M weights)."""
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    generator = torch.Generator().manual_seed(7)
    state = {
        name: torch.randn(t.shape, generator=generator)
        if t.is_floating_point()
        else torch.zeros(t.shape, dtype=t.dtype)
        for name, t in model.state_dict().items()
    }
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / Path(weights.url).name)
    return state


@pytest.fixture
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torchvision's cache in `tmp_path`, and no network (a proxy that refuses)."""
    for name, value in {"TORCH_HOME": str(tmp_path), **NO_NETWORK}.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_vgg16_with_batch_norm_loads_its_own_imagenet_weights(offline_torch_home: Path) -> None:
    state = plant_torchvision(offline_torch_home, "vgg16_bn")
    net = zoo.create_model("vgg16_fcn", pretrained=True, backbone="vgg16_bn").net
    assert torch.equal(net.encoder[1].running_var, state["features.1.running_var"])
    assert torch.equal(net.encoder[40].weight, state["features.40.weight"])  # VGG16-BN's conv5_3


def test_torchvision_weights_load_from_a_warm_cache(offline_torch_home: Path) -> None:
    state = plant_torchvision(offline_torch_home, "vgg16")
    fcn = zoo.create_model("fcn8s", pretrained=True, in_channels=1).net
    small = zoo.create_model("vgg16_fcn", pretrained=True).net
    conv5_3 = state["features.28.weight"]
    assert torch.equal(fcn.encoder["to_pool5"][4].weight, conv5_3)
    assert torch.equal(small.encoder[28].weight, conv5_3)
    assert torch.equal(fcn.fc[0].weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    # in_channels=1: the grey filter is the sum of the RGB filters.
    grey = state["features.0.weight"].sum(1, keepdim=True)
    assert torch.allclose(fcn.encoder["to_pool3"][0].weight, grey)


def test_torchvision_weights_missing_offline_name_the_file(offline_torch_home: Path) -> None:
    expected = offline_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(zoo.PretrainedWeightsError) as refused:
        zoo.create_model("vgg16_fcn", pretrained=True)
    assert f"to {expected}. With no network, copy that file there" in str(refused.value)


def plant_timm(hf_home: Path, name: str) -> tuple[str, dict[str, torch.Tensor]]:
    import timm
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    torch.manual_seed(7)
    state = timm.create_model(name).state_dict()
    repo = hf_home / "hub" / f"models--{hub_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, repo / "snapshots" / commit / "model.safetensors")
    return hub_id, state


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
@pytest.mark.parametrize("decoder", ["unet", "fcn"])
def test_timm_weights_load_from_a_warm_hub_cache(tmp_path: Path, run_python, decoder) -> None:
    _, state = plant_timm(tmp_path, "resnet18")
    out_file = tmp_path / "loaded.pt"
    run_python(
        "import torch, zoo\n"
        f"m = zoo.create_model('timm/resnet18', pretrained=True, decoder={decoder!r}).net\n"
        "layer4 = m.encoder.layer4[1].conv2.weight\n"
        "torch.save({'conv1': m.encoder.conv1.weight, 'layer4': layer4},\n"
        f"           {str(out_file)!r})\n",
        env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", **NO_NETWORK},
    )
    loaded = torch.load(out_file)
    assert torch.equal(loaded["conv1"], state["conv1.weight"])
    assert torch.equal(loaded["layer4"], state["layer4.1.conv2.weight"])


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_timm_weights_missing_offline_name_the_hub_file(tmp_path: Path, run_python) -> None:
    result = run_python(
        "import zoo\ntry:\n    zoo.create_model('timm/resnet18', pretrained=True)\n"
        "except zoo.PretrainedWeightsError as e:\n    print(e)\n",
        env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert "model.safetensors of the Hub repository timm/resnet18" in result.stdout
    assert str(tmp_path / "hub" / "models--timm--resnet18") in result.stdout


def test_an_rgb_input_conv_adapted_to_grey_answers_as_for_r_equal_g_equal_b() -> None:
    from zoo import adapt_input_conv

    torch.manual_seed(0)
    rgb = torch.nn.Conv2d(3, 4, 3, padding=1)
    grey = torch.rand(1, 1, 8, 8)
    adapted = adapt_input_conv(rgb, 1)
    assert adapted.in_channels == 1 and adapted.padding == (1, 1)
    torch.testing.assert_close(adapted(grey), rgb(grey.repeat(1, 3, 1, 1)))
    four = adapt_input_conv(rgb, 4)  # filters repeated R, G, B, R and scaled by 3 / 4
    torch.testing.assert_close(four.weight[:, 3], rgb.weight[:, 0] * 0.75)
    assert adapt_input_conv(rgb, 3) is rgb
