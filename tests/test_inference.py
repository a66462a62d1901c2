"""Tiled sliding-window prediction agrees with one-pass prediction and covers every pixel."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from tests.conftest import REPO


def pointwise_model(num_classes: int) -> zoo.SegmentationModel:
    """A 1x1-conv model: every pixel depends on itself only, so tiling must not change it."""
    torch.manual_seed(0)
    spec = zoo.ModelSpec(name="pointwise", summary="1x1 conv", builder=lambda **kw: None)
    net = nn.Conv2d(3, num_classes, 1)
    return zoo.SegmentationModel(net, spec, num_classes=num_classes, in_channels=3, build_kwargs={})


@pytest.mark.parametrize("num_classes", [1, 3])
def test_tiles_blend_back_to_the_one_pass_prediction(num_classes: int) -> None:
    model = pointwise_model(num_classes)
    image = torch.randn(1, 3, 301, 517)
    calls = []
    tiled = zoo.sliding_window_predict(
        model, image, tile=128, overlap=0.25, batch_size=3, progress=lambda d, t: calls.append(d)
    )
    assert tiled.shape == (1, num_classes, 301, 517)
    assert torch.allclose(tiled, model.predict_normalized(image), atol=1e-5)
    # 128-pixel tiles at most 96 apart: ceil((301 - 128) / 96) + 1 = 3 rows and
    # ceil((517 - 128) / 96) + 1 = 6 columns, so 18 tiles in 6 batches of 3.
    assert calls == [3, 6, 9, 12, 15, 18]


def test_small_image_is_one_pass_and_bad_input_is_refused() -> None:
    model = pointwise_model(1)
    image = torch.randn(1, 3, 40, 50)
    assert torch.equal(zoo.sliding_window_predict(model, image), model.predict_normalized(image))
    with pytest.raises(ValueError, match="1 x C x H x W"):
        zoo.sliding_window_predict(model, torch.randn(2, 3, 40, 50))
    with pytest.raises(ValueError, match="overlap"):
        zoo.sliding_window_predict(model, image, overlap=1.0)


def test_the_tile_size_with_the_fewest_model_pixels_is_chosen() -> None:
    # 1411 px, overlap 1/8: 512-px tiles 448 apart need 4 a side (16 x 512^2 = 4.19M pixels),
    # 768-px tiles 672 apart need 2 (4 x 768^2 = 2.36M), 1024-px tiles 2 (4.19M).
    assert zoo.fewest_pixels_tile(1411, 1411, (1024, 768, 512), 0.125) == 768
    # 4096 px: 9 x 9 tiles of 512 and 6 x 6 of 768 both run 21.2M pixels: the smaller wins.
    assert zoo.fewest_pixels_tile(4096, 4096, (512, 768, 1024), 0.125) == 512
    assert (
        zoo.fewest_pixels_tile(300, 2000, (512, 768), 0.0) == 512
    )  # 4 x 300 x 512 < 3 x 300 x 768


def readme_block(marker: str) -> str:
    """The README's Python code block that holds `marker`, as written."""
    text = (REPO / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"expected one README block with {marker!r}, found {len(found)}"
    return found[0]


def test_the_readme_predict_example_scores_as_the_demo(monkeypatch) -> None:
    """The README's `from_pretrained(...).predict(...)` example, run as written on the histology
    example read by `read_image`: its mask's Dice within 0.01 of the demo's on the same image
    (images as read, [0, 1]: `predict` applies the saved normalization itself)."""
    from demo import serving
    from trainers.data import read_image, read_mask
    from trainers.scores.metrics import confusion, dice

    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(readme_block('read_image("examples/dsb2018/histology'), namespace)
    example = REPO / "examples" / "dsb2018" / "histology-a08166d9.png"
    target = read_mask(example.with_name(example.stem + "_mask.png"))
    ours = dice(confusion(namespace["mask"][0].numpy(), target))
    served = serving.serve(str(REPO / "weights" / "dsb2018-unet"), "eager")
    threshold = served.model.pretrained_config["threshold"]
    demo = dice(
        confusion(serving.predict_image(served, read_image(example))[0] > threshold, target)
    )
    assert ours == pytest.approx(demo, abs=0.01) and demo > 0.8


class TileCentre(nn.Module):
    """Answers 1 at the centre of whatever it is given and 0 at its edges, whatever the pixels:
    a model whose answer near a tile's edge differs from its answer at the tile's centre."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ys = 1 - (torch.arange(h) - (h - 1) / 2).abs() / ((h - 1) / 2)
        xs = 1 - (torch.arange(w) - (w - 1) / 2).abs() / ((w - 1) / 2)
        return torch.logit((ys[:, None] * xs).clamp(1e-4, 1 - 1e-4)).expand(x.shape[0], 1, h, w)


def test_tile_centres_outweigh_tile_edges_in_the_blend() -> None:
    """One row of two 64-pixel tiles over a 64 x 96 image (starts 0 and 32). At column 40 the
    first tile sees the pixel 8 from its right edge, the second 8 from its centre; the blend is
    the Gaussian-weighted mean of the two answers (sigma = 64 / 8), so it lies near the second
    tile's answer, not halfway."""
    spec = zoo.ModelSpec(name="centre", summary="tile centre", builder=lambda **kw: None)
    model = zoo.SegmentationModel(TileCentre(), spec, num_classes=1, in_channels=3,
                                  build_kwargs={})  # fmt: skip
    out = zoo.sliding_window_predict(model, torch.zeros(1, 3, 64, 96), tile=64, overlap=0.5)
    row, column = 31, 40  # the middle row: its vertical factor is ~1 in both tiles
    hat = lambda p: 1 - abs(p - 31.5) / 31.5  # noqa: E731 (the model's answer at p in a tile)
    gauss = lambda p: math.exp(-0.5 * ((p - 31.5) / 8) ** 2)  # noqa: E731 (the blend's weight)
    first, second = column, column - 32  # the pixel's position in each tile
    weighted = (gauss(first) * hat(first) + gauss(second) * hat(second)) / (
        gauss(first) + gauss(second)
    )
    vertical = hat(row)
    assert out[0, 0, row, column].item() == pytest.approx(weighted * vertical, abs=2e-3)
    halfway = (hat(first) + hat(second)) / 2 * vertical
    assert out[0, 0, row, column].item() > halfway + 0.1  # the centre's answer wins
