"""Inference engines: the same masks as eager PyTorch, an export cache, an engine named either
running or raising, and the automatic choice's fallback."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import zoo
from tests.conftest import REPO, SHARED_DATA
from trainers.data import eval_transform
from trainers.data.readers import read_image
from trainers.scores import scoring
from zoo import _engines

BUNDLED = sorted(  # the image models (the volume model runs by sliding windows, no engine)
    p.parent
    for p in (REPO / "weights").glob("*/model.safetensors")
    if "volume" not in json.loads((p.parent / "config.json").read_text())
)
DRIVE_IMAGE = SHARED_DATA / "DRIVE" / "test" / "images" / "01_test.tif"
CHOSEN = _engines.DEFAULT_ENGINE


@pytest.fixture(autouse=True)
def engine_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """One export cache for the whole test session, outside the user's own."""
    folder = tmp_path_factory.getbasetemp() / "engine-cache"
    monkeypatch.setenv(_engines.CACHE_ENV, str(folder))
    return folder


def model_input(model: zoo.SegmentationModel, image: np.ndarray) -> torch.Tensor:
    blank = np.zeros(image.shape[:2], dtype=bool)
    return eval_transform(mean=model.spec.mean, std=model.spec.std)(image, blank, blank)[0][None]


def example_image(folder: Path) -> np.ndarray:
    """An image of the model's own domain where one is committed, else a smooth pattern."""
    examples = sorted((REPO / "examples" / "dsb2018").glob("*[!k].png"))
    if folder.name.startswith("dsb2018") and examples:
        return read_image(examples[0])
    grid = np.linspace(0, 1, 192, dtype=np.float32)
    return np.stack([np.outer(grid, grid), np.outer(grid, 1 - grid), np.outer(1 - grid, grid)], -1)


def tiny_unet() -> zoo.SegmentationModel:
    """A seeded 4-channel U-Net: the tests that export it share one file in the cache."""
    torch.manual_seed(0)
    return zoo.create_model("unet", base_channels=4).eval()


def test_the_chosen_engine_gives_eager_s_masks_on_a_tiny_model() -> None:
    model = tiny_unet()
    predict, used = zoo.engine_predict(model, CHOSEN)
    assert used == CHOSEN
    x = model_input(model, example_image(Path("tiny")))
    eager, engine = model.predict_normalized(x), predict(x)
    assert engine.shape == eager.shape == (1, 1, 192, 192) and engine.dtype == torch.float32
    assert (engine - eager).abs().max() < 1e-3
    assert ((engine > 0.5) != (eager > 0.5)).sum() <= 5


@pytest.mark.slow  # an export each (about 20 s on 2 cores); the tiny model's test runs by default
@pytest.mark.parametrize("folder", BUNDLED, ids=lambda p: p.name)
def test_the_chosen_engine_gives_eager_s_masks_on_the_bundled_models(folder: Path) -> None:
    model = zoo.from_pretrained(folder)
    predict, used = zoo.engine_predict(model, CHOSEN)
    assert used == CHOSEN
    image = example_image(folder)
    x = model_input(model, image[..., : model.in_channels])
    eager, engine = model.predict_normalized(x), predict(x)
    assert engine.shape == eager.shape and engine.dtype == torch.float32
    assert (engine - eager).abs().max() < 1e-3
    assert ((engine > 0.5) != (eager > 0.5)).sum() <= 5  # a handful at most, at p = 0.5 +- 1e-6


@pytest.mark.skipif(not DRIVE_IMAGE.is_file(), reason=f"shared data {DRIVE_IMAGE} is absent")
def test_the_chosen_engine_gives_eager_s_mask_on_a_drive_test_image() -> None:
    model = zoo.from_pretrained(REPO / "weights" / "drive-unet")
    predict, _ = zoo.engine_predict(model, CHOSEN)
    x = model_input(model, read_image(DRIVE_IMAGE))
    eager = zoo.sliding_window_predict(model, x, tile=1024)
    engine = zoo.sliding_window_predict(model, x, tile=1024, predict=predict)
    assert (engine - eager).abs().max() < 1e-3
    assert ((engine > 0.5) != (eager > 0.5)).sum() <= 5


@torch.library.custom_op("bioseg_test::unexportable", mutates_args=())
def unexportable(x: torch.Tensor) -> torch.Tensor:
    """An operator with no ONNX translation, as a plugin might bring."""
    return x.clone()


@unexportable.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class OddNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unexportable(self.conv(x))


def odd_model() -> zoo.SegmentationModel:
    spec = dataclasses.replace(zoo.get_spec("unet"), name="odd_op", min_size=1)
    return zoo.SegmentationModel(OddNet(), spec, num_classes=1, in_channels=3, build_kwargs={})


def test_a_named_engine_that_cannot_run_the_model_raises_naming_the_engine_and_the_cause(
    monkeypatch,
) -> None:
    model = odd_model()
    with pytest.raises(ValueError, match=r"^odd_op: engine onnxruntime failed \("):
        zoo.engine_predict(model, "onnxruntime")
    monkeypatch.setenv(_engines.ENGINE_ENV, "onnxruntime")  # named in the environment: the same
    with pytest.raises(ValueError, match=f"named by {_engines.ENGINE_ENV}"):
        zoo.engine_predict(model)


def test_the_automatic_choice_falls_back_to_eager_with_one_message_saying_why(
    monkeypatch, caplog
) -> None:
    monkeypatch.delenv(_engines.ENGINE_ENV, raising=False)
    model = odd_model()
    with caplog.at_level(logging.WARNING, logger="bioseg.engines"):
        predict, used = zoo.engine_predict(model)
    assert used == "eager" and predict.predict == model.predict_normalized
    (record,) = [r for r in caplog.records if r.name == "bioseg.engines"]
    assert record.getMessage().startswith("odd_op: cannot run on onnxruntime (")
    assert "using eager PyTorch" in record.getMessage()


def test_a_named_engine_s_wrong_output_shape_raises_instead_of_falling_back(monkeypatch) -> None:
    """A runtime answering with the wrong shape (the check `check_output` makes): a bug that a
    fallback to eager would hide."""
    model = zoo.create_model("unet", base_channels=4).eval()
    monkeypatch.setattr(_engines, "exported_onnx", lambda model, cache: Path("unused.onnx"))

    def wrong(path: Path, threads: int, smallest: tuple[int, ...]) -> _engines.Session:
        return (lambda x: np.zeros((1, 2, 3, 3), np.float32)), (lambda: None)

    monkeypatch.setitem(_engines._RUNTIMES, "onnxruntime", wrong)
    monkeypatch.setenv(_engines.ENGINE_ENV, "onnxruntime")
    with pytest.raises(ValueError, match=r"onnxruntime .*failed .*returned \(1, 2, 3, 3\)"):
        zoo.engine_predict(model)


def test_an_exported_model_is_reused_from_the_cache_and_new_weights_export_anew(
    engine_cache: Path, monkeypatch
) -> None:
    model = tiny_unet()
    x = torch.rand(1, 3, 48, 64)
    first, _ = zoo.engine_predict(model, "onnxruntime")
    exports = []
    real_export = torch.onnx.export
    monkeypatch.setattr(
        torch.onnx, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k)
    )
    again, used = zoo.engine_predict(model, "onnxruntime")
    assert used == "onnxruntime" and exports == []  # found in the cache, not exported again
    torch.testing.assert_close(again(x), first(x))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    changed, _ = zoo.engine_predict(model, "onnxruntime")
    assert exports == [1]  # other weights, another file
    torch.testing.assert_close(changed(x), model.predict_normalized(x), atol=1e-5, rtol=0)
    assert len(list((engine_cache / "engines").glob("unet-*.onnx"))) >= 2


def test_engine_input_is_checked_as_eager_and_unknown_engines_are_named() -> None:
    model = tiny_unet()
    predict, _ = zoo.engine_predict(model, "onnxruntime")
    with pytest.raises(ValueError, match="expects a batch N x 3 x H x W, got shape"):
        predict(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'; choose one of eager, "):
        zoo.engine_predict(model, "tensorrt")


def test_a_missing_engine_package_raises_when_named_and_falls_back_when_chosen(
    monkeypatch, caplog
) -> None:
    model = zoo.create_model("unet", base_channels=4).eval()
    monkeypatch.setattr(_engines.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"openvino is not installed \(pip install openvino\)"):
        zoo.engine_predict(model, "openvino")
    monkeypatch.delenv(_engines.ENGINE_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="bioseg.engines"):
        predict, used = zoo.engine_predict(model)
    assert used == "eager" and predict.predict == model.predict_normalized
    assert "engine onnxruntime is not installed (pip install onnxruntime)" in caplog.text


def test_a_served_model_runs_through_the_engine_asked_for() -> None:
    from demo import serving

    served = serving.serve(str(REPO / "weights" / "dsb2018-unet"), "eager")
    assert served.engine == "eager"
    image = np.asarray(Image.new("RGB", (70, 50), "white"), dtype=np.float32) / 255
    x = serving.channels_first(image)[None]
    mean, std = (
        torch.tensor(v)[:, None, None] for v in (served.model.spec.mean, served.model.spec.std)
    )
    assert torch.equal(served.predict(x), served.model.predict_normalized((x - mean) / std))
    assert serving.predict_image(served, image).shape == (1, 50, 70)


def test_served_models_run_one_forward_pass_at_a_time(monkeypatch) -> None:
    """Two requests' forwards at once would share the same cores and slow each other down."""
    from demo import serving

    running, most, guard = [0], [0], threading.Lock()

    def slow_forward(x: torch.Tensor) -> torch.Tensor:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return x

    monkeypatch.setattr(
        serving,
        "engine_predict",
        lambda model, engine, sample, cache: (_engines.Runner(slow_forward), "slow"),
    )
    names = ("dsb2018-unet", "drive-unet")  # two models: one forward at a time across models too
    served = [serving.serve(str(REPO / "weights" / name)) for name in names]
    with ThreadPoolExecutor(max_workers=4) as pool:
        calls = [pool.submit(s.predict, torch.zeros(1, 3, 8, 8)) for s in served * 4]
        assert all(call.result().shape == (1, 3, 8, 8) for call in calls)
    assert most[0] == 1


def test_tiles_normalized_one_at_a_time_give_the_whole_image_normalized_at_once() -> None:
    from demo import serving

    served = serving.serve(str(REPO / "weights" / "dsb2018-unet"), "eager")
    grey = np.random.default_rng(0).random((300, 200, 1), dtype=np.float32)
    tiled = serving.predict_image(served, grey, tiles=(128,))  # overlapping 128x128 tiles
    model = served.model
    whole = zoo.normalize(torch.from_numpy(grey).permute(2, 0, 1).expand(3, -1, -1)[None],
                          model.spec.mean, model.spec.std)  # fmt: skip
    expected = zoo.sliding_window_predict(model, whole, tile=128, overlap=scoring.OVERLAP)
    np.testing.assert_allclose(tiled, expected[0].to(torch.float16).numpy(), atol=0)


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_the_demo_does_not_import_torchvision_or_timm() -> None:
    """About 160 MB resident (torchvision), and 35 MB more (timm), that the default models do
    not need; a timm model imports them when it is loaded."""
    code = (
        "import sys; sys.argv = ['app.py']; import app; "
        "print(sorted({'torchvision', 'timm'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_release_gives_the_memory_back_and_the_engine_answers_the_same_after() -> None:
    model = tiny_unet()
    runner, used = zoo.engine_predict(model, "onnxruntime")
    assert used == "onnxruntime"
    x = torch.rand(1, 3, 96, 80)
    before = runner(x)
    runner.release()
    torch.testing.assert_close(runner(x), before, atol=0, rtol=0)


def test_the_engine_memory_is_given_back_after_inputs_larger_than_512x512() -> None:
    from demo import serving

    model = zoo.create_model("unet", base_channels=4).eval()
    released = []
    served = serving.Served(model, model.predict, lambda: released.append(1), "test")
    serving.predict_image(served, np.zeros((512, 512, 3), np.float32))
    assert released == []  # the usual size: the engine keeps its memory for the next request
    serving.predict_image(served, np.zeros((520, 600, 3), np.float32))
    assert released == [1]


def test_the_demo_serves_a_model_with_a_scale_at_the_image_s_size() -> None:
    from demo import serving

    model = zoo.create_model("unet", base_channels=4).eval()
    model.scale = 0.5
    served = serving.Served(model, model.predict_normalized, lambda: None, "test")
    image = np.random.default_rng(0).random((1100, 300, 3), dtype=np.float32)
    tiles = []
    probabilities = serving.predict_image(served, image, lambda done, total: tiles.append(total))
    assert probabilities.shape == (1, 1100, 300)
    assert tiles == [1]  # 550x150 at half resolution: one pass, no tiles


def test_bf16_agrees_with_float32_on_the_bundled_nuclei_example() -> None:
    model = zoo.from_pretrained(REPO / "weights" / "dsb2018-unet")
    x = model_input(model, example_image(REPO / "weights" / "dsb2018-unet"))
    predict, used = zoo.engine_predict(model, "bf16")
    assert used == "bf16"
    eager, fast = model.predict_normalized(x) > 0.5, predict(x) > 0.5
    assert fast.dtype == torch.bool and (eager == fast).float().mean() >= _engines.AGREEMENT


@pytest.mark.skipif(not zoo.cpu_has_bf16(), reason="this CPU has no bf16 matrix units")
def test_the_measured_choice_refuses_bf16_where_its_mask_disagrees(monkeypatch, caplog) -> None:
    model = zoo.from_pretrained(REPO / "weights" / "dsb2018-unet")
    image = example_image(REPO / "weights" / "dsb2018-unet")
    x = torch.from_numpy(image).permute(2, 0, 1)[None]  # in [0, 1]: the engine normalizes it
    monkeypatch.delenv(_engines.ENGINE_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="bioseg.engines"):
        _, used = zoo.engine_predict(model, sample=x)
    assert used in ("bf16", _engines.DEFAULT_ENGINE) and "mask agreement" in caplog.text
    monkeypatch.setattr(_engines, "AGREEMENT", 1.01)  # no mask can agree on 101 % of pixels
    with caplog.at_level(logging.INFO, logger="bioseg.engines"):
        _, used = zoo.engine_predict(model, sample=x)
    assert used == _engines.DEFAULT_ENGINE and "below 101.0%" in caplog.text
