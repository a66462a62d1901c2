"""trainers.data: readers on files written here, layouts on the shared data and fake trees."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED_DATA
from trainers.data import (
    DataError,
    Sample,
    SegmentationDataset,
    eval_transform,
    parse_spec,
    read_image,
    read_mask,
    read_masks_union,
    read_sample,
    train_transform,
    train_val_split,
)
from zoo import match_channels

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def shared(name: str) -> Path:
    """A data set folder under the shared data; the test is skipped when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data {path} is absent (tests read ../shared/data in place)")
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs: object) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **kwargs)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG holding only its header (IHDR, IEND): it claims a size but has no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


GREY = np.array([[0, 51, 102], [153, 204, 255]], np.uint8)
RGB = np.stack([GREY, 255 - GREY, np.full_like(GREY, 17)], axis=-1)


# --- readers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_grey_image_lossless_formats(tmp_path: Path, suffix: str) -> None:
    image = read_image(save(tmp_path / f"grey{suffix}", GREY))
    assert image.dtype == np.float32 and image.shape == (2, 3, 1)
    np.testing.assert_allclose(image[..., 0], GREY / 255, atol=1e-7)


def test_read_rgb_and_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB, np.full_like(GREY, 9)[..., None]], axis=-1)
    for path in (save(tmp_path / "rgb.png", RGB), save(tmp_path / "rgba.png", rgba)):
        image = read_image(path)
        assert image.shape == (2, 3, 3)
        np.testing.assert_allclose(image, RGB / 255, atol=1e-7)


def test_read_palette_images_as_rgb(tmp_path: Path) -> None:
    gif = read_image(save(tmp_path / "grey.gif", GREY))  # GIF stores a palette
    assert gif.shape == (2, 3, 3)
    np.testing.assert_allclose(gif, np.repeat(GREY[..., None] / 255, 3, axis=2), atol=1e-7)
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    palette_image.putdata([0, 1])
    palette_image.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    np.testing.assert_allclose(image[0] * 255, [[10, 20, 30], [200, 100, 0]], atol=1e-4)


def test_read_cmyk_jpeg_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    image = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image.mean(axis=(0, 1)), [0, 1, 1], atol=0.03)  # cyan


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_16_bit_png_and_tiff_keep_full_depth(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 1000, 65535]], np.uint16)
    path = save(tmp_path / f"deep{suffix}", values)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (1, 3, 1)
    np.testing.assert_allclose(image[0, :, 0], [0, 1000 / 65535, 1], rtol=1e-6)


def test_unreadable_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    whole = save(tmp_path / "whole.png", noise)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    jpeg = tmp_path / "whole.jpg"
    Image.fromarray(noise).save(jpeg)
    cut_jpeg = tmp_path / "truncated.jpg"
    cut_jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    cases = [(empty, "empty"), (text, "not a readable"), (truncated, "not a readable")]
    for path, reason in [*cases, (cut_jpeg, "not a readable")]:
        with pytest.raises(DataError, match=reason) as caught:
            read_image(path)
        assert str(path) in str(caught.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_pixel_limit_is_checked_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainers.data import readers

    # The defaults a library user gets, whatever a server (app.py, imported by other tests) set.
    monkeypatch.setattr(readers, "_PROCESS_LIMIT", None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", readers.DEFAULT_MAX_PIXELS)
    bomb = png_header(tmp_path / "bomb.png", 100_000, 100_000)  # no pixel data to decode
    with pytest.raises(DataError, match="exceeds the limit of 400,000,000") as caught:
        read_image(bomb)
    assert str(bomb) in str(caught.value)
    small = save(tmp_path / "small.png", GREY)
    with pytest.raises(DataError, match="exceeds the limit of 5"):
        read_image(small, max_pixels=5)
    monkeypatch.setenv("BIOSEG_MAX_PIXELS", "5")
    with pytest.raises(DataError, match="exceeds"):
        read_mask(small)
    monkeypatch.setenv("BIOSEG_MAX_PIXELS", str(200_000_000))
    # Above Pillow's own limit (179M) but within ours: the header passes, decoding then fails.
    with pytest.raises(DataError, match="not a readable image"):
        read_image(png_header(tmp_path / "big.png", 15_000, 13_000))
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's guard is back for everyone else


def test_binary_masks_0_255_0_1_and_jpeg(tmp_path: Path) -> None:
    truth = np.zeros((32, 32), bool)
    truth[8:24, 4:20] = True
    for name, values in (("a.png", truth * 255), ("b.png", truth * 1)):
        mask = read_mask(save(tmp_path / name, values.astype(np.uint8)))
        assert mask.dtype == bool and mask.shape == (32, 32)
        np.testing.assert_array_equal(mask, truth)
    jpeg = save(tmp_path / "c.jpg", truth.astype(np.uint8) * 255, quality=70)
    raw = np.asarray(Image.open(jpeg))
    assert not set(np.unique(raw)) <= {0, 255}  # compression noise is really there
    np.testing.assert_array_equal(read_mask(jpeg), truth)
    assert read_mask(jpeg, threshold=256).sum() == 0


def test_binary_mask_with_unexpected_values_is_refused(tmp_path: Path) -> None:
    labels = save(tmp_path / "classes.png", np.array([[0, 1], [2, 3]], np.uint8))
    with pytest.raises(DataError, match=r"classes\.png: a binary mask holds .* values 0, 1, 2, 3"):
        read_mask(labels)
    assert read_mask(labels, mode="labels").tolist() == [[0, 1], [2, 3]]


def test_label_masks_integer_16_bit_and_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    read = read_mask(save(tmp_path / "l.png", labels), mode="labels")
    np.testing.assert_array_equal(read, labels)
    deep = np.array([[0, 300, 1000]], np.uint16)
    read = read_mask(save(tmp_path / "d.png", deep), mode="labels")
    assert read.dtype == np.int64
    np.testing.assert_array_equal(read, deep)
    colours = np.array([[[0, 0, 0], [255, 0, 0], [0, 255, 0]]], np.uint8)
    path = save(tmp_path / "rgb.png", colours)
    palette = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2}
    np.testing.assert_array_equal(read_mask(path, mode="labels", palette=palette), [[0, 1, 2]])
    with pytest.raises(DataError, match=r"1 colour\(s\) not in the palette: \(0, 255, 0\)"):
        read_mask(path, mode="labels", palette={(0, 0, 0): 0, (255, 0, 0): 1})
    with pytest.raises(DataError, match="needs a palette"):
        read_mask(path, mode="labels")


def test_masks_union_and_size_mismatch(tmp_path: Path) -> None:
    first, second = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    first[0, 0], second[3, 3] = 255, 255
    paths = [save(tmp_path / "1.png", first), save(tmp_path / "2.png", second)]
    union = read_masks_union(paths)
    assert union.dtype == bool and union.sum() == 2 and union[0, 0] and union[3, 3]
    odd = save(tmp_path / "odd.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"odd\.png: mask is 4 x 5"):
        read_masks_union([*paths, odd])


# --- layouts on the shared data ------------------------------------------------------------------


def test_drive_layout() -> None:
    source = parse_spec(f"drive:{shared('DRIVE')}")
    splits = source.splits()
    assert source.class_names == ("background", "vessel")
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "test": 20}
    assert [s.id for s in splits["train"]][:2] == ["21", "22"]
    assert all(s.roi is not None and s.roi.is_file() for s in splits["train"] + splits["test"])
    assert splits["test"][0].masks[0].name == "01_manual1.gif"


def test_isbi2012_layout_inverts_to_membrane() -> None:
    splits = parse_spec(f"isbi2012:{shared('ISBI2012-membrane')}").splits()
    assert [s.id for s in splits["test"]] == ["25", "26", "27", "28", "29"]
    assert len(splits["train"]) == 25 and all(s.invert for s in splits["train"])
    image, mask, roi = read_sample(splits["train"][0])
    raw = np.asarray(Image.open(splits["train"][0].masks[0]))
    np.testing.assert_array_equal(mask, raw == 0)
    assert image.shape == (512, 512, 1) and roi.all()
    assert 0.20 < mask.mean() < 0.25  # membranes are about a fifth of the pixels


DSB_TEST_IDS_SHA256 = "5de280aaa931ba6836835304cc27acf1472de2f03ddbc6c5cc2867b110fddb6c"


def test_dsb2018_layout_is_a_fixed_seeded_split() -> None:
    spec = f"dsb2018:{shared('DSB2018-nuclei')}"
    splits = parse_spec(spec).splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 531, "test": 133}
    assert splits == parse_spec(spec).splits()
    # Pinned by its image ids: a changed split rule (or file listing) fails here, since the
    # README's and the bundled model's test figures are measured on exactly these images.
    test_ids = "\n".join(sample.id for sample in splits["test"])
    assert splits["test"][0].id.startswith("00ae65c1c6631ae6")
    assert hashlib.sha256(test_ids.encode()).hexdigest() == DSB_TEST_IDS_SHA256
    assert not {s.id for s in splits["train"]} & {s.id for s in splits["test"]}
    sample = next(s for s in splits["test"] if len(s.masks) > 3)
    image, mask, _ = read_sample(sample)
    assert image.shape[2] == 3  # RGBA, alpha dropped
    union = np.zeros_like(mask)
    for path in sample.masks:
        union |= np.asarray(Image.open(path)) > 0
    np.testing.assert_array_equal(mask, union)
    assert mask.sum() > np.asarray(Image.open(sample.masks[0])).astype(bool).sum()


# --- layouts on fake trees -----------------------------------------------------------------------


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def ids(samples: list[Sample]) -> list[str]:
    return [s.id for s in samples]


def test_folder_layout_pairs_stems_and_reads_splits_json(tmp_path: Path) -> None:
    touch(*(tmp_path / "images" / f"{s}.png" for s in "abcde"))
    touch(tmp_path / "masks/a.png", tmp_path / "masks/b_mask.png", tmp_path / "masks/c.jpg")
    touch(tmp_path / "masks/d.tif", tmp_path / "masks/e_mask.gif")
    source = parse_spec(f"folder:{tmp_path}")
    assert ids(source.splits()["train"]) == list("abcde")
    assert source.splits()["train"][1].masks == (tmp_path / "masks/b_mask.png",)
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["e", "a", "c"], "val": ["b", "d"]}))
    splits = source.splits()
    assert {k: ids(v) for k, v in splits.items()} == {"train": ["a", "c", "e"], "val": ["b", "d"]}
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["a", "b", "c", "d"]}))
    with pytest.raises(DataError, match=r"images in no split \(1: e\)"):
        source.splits()
    (tmp_path / "splits.json").write_text(json.dumps({"train": list("abcde"), "test": []}))
    with pytest.raises(DataError, match="'test' lists no stems"):
        source.splits()


def test_folder_layout_refuses_unpaired_files(tmp_path: Path) -> None:
    touch(*(tmp_path / "images" / f"{n:02d}.png" for n in range(15)))
    touch(*(tmp_path / "masks" / f"{n:02d}.png" for n in range(2)), tmp_path / "masks/zz.png")
    with pytest.raises(DataError) as caught:
        parse_spec(f"folder:{tmp_path}").splits()
    message = str(caught.value)
    assert "images without a mask" in message and "(13: 02, 03," in message
    assert "10, 11 and 3 more" in message
    assert "masks without an image" in message and "(1: zz)" in message


def test_folder_layout_with_split_subfolders(tmp_path: Path) -> None:
    for split, stems in (("train", "abc"), ("test", "d")):
        touch(*(tmp_path / split / sub / f"{s}.png" for s in stems for sub in ("images", "masks")))
    splits = parse_spec(f"folder:{tmp_path}").splits()
    assert {k: ids(v) for k, v in splits.items()} == {"train": ["a", "b", "c"], "test": ["d"]}


def test_chase_layout_first_20_train_last_8_test(tmp_path: Path) -> None:
    names = [f"Image_{n:02d}{eye}" for n in range(1, 15) for eye in "LR"]
    touch(*(tmp_path / f"{name}.jpg" for name in names))
    touch(*(tmp_path / f"{name}_{who}HO.png" for name in names for who in ("1st", "2nd")))
    splits = parse_spec(f"chase:{tmp_path}").splits()
    assert ids(splits["train"]) == names[:20] and ids(splits["test"]) == names[20:]
    assert splits["test"][0].masks == (tmp_path / "Image_11L_1stHO.png",)
    (tmp_path / "Image_14R_1stHO.png").unlink()
    with pytest.raises(DataError, match=r"Image_14R_1stHO\.png"):
        parse_spec(f"chase:{tmp_path}").splits()


def test_kvasir_layout_seeded_80_10_10(tmp_path: Path) -> None:
    stems = [f"cju{n:03d}" for n in range(30)]
    touch(*(tmp_path / sub / f"{s}.jpg" for s in stems for sub in ("images", "masks")))
    splits = parse_spec(f"kvasir:{tmp_path}").splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 24, "val": 3, "test": 3}
    assert sorted(s for v in splits.values() for s in ids(v)) == stems
    assert splits == parse_spec(f"kvasir:{tmp_path}").splits()


def test_isic2018_layout_official_parts_or_seeded(tmp_path: Path) -> None:
    def part(name: str, count: int) -> None:
        stems = [f"ISIC_{name[0]}{n:06d}" for n in range(count)]
        touch(*(tmp_path / f"ISIC2018_Task1-2_{name}_Input/{s}.jpg" for s in stems))
        truth = tmp_path / f"ISIC2018_Task1_{name}_GroundTruth"
        touch(*(truth / f"{s}_segmentation.png" for s in stems))

    part("Training", 20)
    touch(tmp_path / "ISIC2018_Task1-2_Training_Input/LICENSE.txt")
    source = parse_spec(f"isic2018:{tmp_path}")
    assert {k: len(v) for k, v in source.splits().items()} == {"train": 16, "val": 2, "test": 2}
    part("Validation", 4)
    splits = source.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "val": 4}
    assert splits["val"][0].masks[0].name == "ISIC_V000000_segmentation.png"


def test_parse_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kinds: drive, isbi2012, chase, dsb2018, kvasir"):
        parse_spec(f"retina:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        parse_spec(f"drive:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="KIND:PATH"):
        parse_spec(str(tmp_path))


def test_train_val_split_is_deterministic_and_disjoint() -> None:
    samples = [Sample(f"s{n}", Path(f"{n}.png"), (Path(f"{n}_m.png"),)) for n in range(50)]
    train, val = train_val_split(samples, 0.2, seed=0)
    assert len(train) == 40 and len(val) == 10
    assert sorted(ids(train + val), key=lambda s: int(s[1:])) == ids(samples)
    assert (train, val) == train_val_split(list(reversed(samples)), 0.2, seed=0)
    assert ids(train_val_split(samples, 0.2, seed=1)[1]) != ids(val)
    assert len(train_val_split(samples[:3], 0.1)[1]) == 1  # at least one
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(samples, 0.0)


# --- transforms and dataset ----------------------------------------------------------------------


def test_train_transform_keeps_masks_exact_and_aligned() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 50), np.int64)
    labels[5:30, 10:35], labels[20:38, 30:48] = 3, 7
    image = np.repeat((labels > 0).astype(np.float32)[..., None], 3, axis=2)
    roi = rng.random((40, 50)) > 0.1
    transform = train_transform(64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), jitter=0.0)
    torch.manual_seed(0)
    for _ in range(10):
        out_image, out_mask, out_roi = transform(image, labels, roi)
        assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32
        assert out_mask.shape == (64, 64) and out_mask.dtype == torch.int64
        assert out_roi.dtype == torch.bool
        assert set(out_mask.unique().tolist()) <= {0, 3, 7}
        assert out_roi.sum() < 40 * 50 * 1.25**2  # padding and rotated corners are outside
        agree = ((out_image[0] > 0) == (out_mask > 0)).float().mean()
        assert agree > 0.97  # image and mask moved together


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_invert_turns_a_crop_grey_and_inverts_it_leaving_the_mask(dtype: type) -> None:
    image = np.zeros((40, 40, 3), np.float32)  # a 32 x 32 crop always holds the centre square
    image[..., 0], image[16:24, 16:24] = 0.3, 0.9  # grey 0.1, inverted 0.9; the square's 0.1
    if dtype is np.uint8:
        image = (image * 255).round().astype(np.uint8)
    mask = np.zeros((40, 40), np.int64)
    mask[16:24, 16:24] = 2
    steps = dict(jitter=0.0, rotation=0.0, scale=(1.0, 1.0))
    inverted = train_transform(32, invert=1.0, mean=(0.0,) * 3, std=(1.0,) * 3, **steps)
    torch.manual_seed(0)
    out_image, out_mask, _ = inverted(image, mask, np.ones((40, 40), bool))
    corner = (out_mask == 2).nonzero()[0]  # flips may have moved it
    far = (out_mask == 0).nonzero()[0]
    assert (out_mask == 2).sum() == 64  # the mask is untouched
    np.testing.assert_allclose(out_image[:, far[0], far[1]], [0.9] * 3, atol=1 / 255)
    np.testing.assert_allclose(out_image[:, corner[0], corner[1]], [0.1] * 3, atol=1 / 255)
    kept = train_transform(32, invert=0.0, mean=(0.0,) * 3, std=(1.0,) * 3, **steps)
    out_image, _, _ = kept(image, mask, np.ones((40, 40), bool))
    red = out_image[0]  # its colour kept: 0.3 around the square, 0.9 in it
    assert (((red - 0.3).abs() < 1 / 255) | ((red - 0.9).abs() < 1 / 255)).all()
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        train_transform(32, invert=1.5, mean=(0.0,) * 3, std=(1.0,) * 3)


def test_eval_transform_normalizes_per_channel_and_for_grey() -> None:
    transform = eval_transform(mean=(0.2, 0.4, 0.6), std=(0.1, 0.2, 0.3))
    mask, roi = np.zeros((3, 4), bool), np.ones((3, 4), bool)
    colour, _, _ = transform(np.full((3, 4, 3), 0.8, np.float32), mask, roi)
    np.testing.assert_allclose(colour[:, 0, 0], [6.0, 2.0, 2 / 3], rtol=1e-5)
    grey, out_mask, out_roi = transform(np.full((3, 4, 1), 0.8, np.float32), mask, roi)
    assert grey.shape == (1, 3, 4) and out_mask.dtype == torch.int64 and out_roi.all()
    np.testing.assert_allclose(grey, 2.0, rtol=1e-5)  # (0.8 - 0.4) / 0.2


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_items_on_drive(channels: int) -> None:
    test = parse_spec(f"drive:{shared('DRIVE')}").splits()["test"][:2]
    dataset = SegmentationDataset(test, eval_transform(mean=MEAN, std=STD), in_channels=channels)
    item = dataset[1]
    assert len(dataset) == 2 and item["id"] == "02"
    assert item["image"].shape == (channels, 584, 565) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) == {0, 1}
    assert item["roi"].dtype == torch.bool and 0.6 < item["roi"].float().mean() < 0.75
    assert 0.05 < item["mask"][item["roi"]].float().mean() < 0.2  # vessels inside the FOV


def test_dataset_patches_are_fresh_random_crops() -> None:
    train = parse_spec(f"drive:{shared('DRIVE')}").splits()["train"][:2]
    dataset = SegmentationDataset(
        train, train_transform(96, mean=MEAN, std=STD), in_channels=1, patches_per_image=3
    )
    assert len(dataset) == 6
    items = [dataset[i] for i in range(4)]
    assert [item["id"] for item in items] == ["21", "21", "21", "22"]
    assert items[0]["image"].shape == (1, 96, 96)
    assert not torch.equal(items[0]["image"], items[1]["image"])
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["mask"].shape == (2, 96, 96) and batch["id"] == ["21", "21"]


def test_balance_grounds_repeats_the_rarer_grounds_images(tmp_path: Path) -> None:
    samples = []
    for index, level in enumerate((20, 30, 40, 50, 60, 70, 230)):  # six dark grounds, one light
        image = np.full((8, 8), level, np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[2:4, 2:4] = 255
        samples.append(
            Sample(
                f"s{index}",
                save(tmp_path / f"s{index}.png", image),
                (save(tmp_path / f"s{index}_mask.png", mask),),
            )
        )
    dataset = SegmentationDataset(samples, eval_transform(), patches_per_image=2)
    dataset.keep_all()
    assert dataset.balance_grounds() == (1, 6)
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    assert len(ids) == (6 + 6) * 2  # the light image six times, each with its two crops
    assert ids.count("s6") == 12 and ids.count("s0") == 2
    one_ground = SegmentationDataset(samples[:6], eval_transform(), patches_per_image=2)
    assert one_ground.balance_grounds() == (0, 6) and len(one_ground) == 12  # read, unchanged


def test_dataset_reads_lazily_and_checks_arguments(tmp_path: Path) -> None:
    ghost = Sample("ghost", tmp_path / "ghost.png", (tmp_path / "ghost_mask.png",))
    dataset = SegmentationDataset([ghost], eval_transform(mean=MEAN, std=STD))
    with pytest.raises(FileNotFoundError, match=r"ghost\.png"):
        dataset[0]
    with pytest.raises(ValueError, match="in_channels"):
        SegmentationDataset([ghost], eval_transform(mean=MEAN, std=STD), in_channels=2)
    save(tmp_path / "ghost.png", GREY)
    save(tmp_path / "ghost_mask.png", np.zeros((3, 2), np.uint8))
    with pytest.raises(DataError, match=r"ghost_mask\.png: mask is 2 x 3 but image"):
        dataset[0]


def test_folder_classes_json_sets_classes_palette_and_mode(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        save(tmp_path / sub / "a.png", GREY)
    (tmp_path / "classes.json").write_text('{"classes": ["bg", "x", "y"], "palette": {"9,9,9": 2}}')
    source = parse_spec(f"folder:{tmp_path}")
    assert source.class_names == ("bg", "x", "y") and source.mask_mode == "labels"
    assert source.palette == {(9, 9, 9): 2}
    (tmp_path / "classes.json").write_text('{"classes": ["bg", "x"], "palette": {"9,9": 5}}')
    with pytest.raises(DataError, match=r"classes\.json: palette entries"):
        parse_spec(f"folder:{tmp_path}")
    (tmp_path / "classes.json").write_text('{"names": []}')
    with pytest.raises(DataError, match="expected"):
        parse_spec(f"folder:{tmp_path}")


def test_channels_are_matched_to_the_model_or_refused() -> None:
    grey, rgb = np.full((4, 5, 1), 0.5, np.float32), np.random.default_rng(0).random((4, 5, 3))
    assert match_channels(grey, 3).shape == (4, 5, 3)
    np.testing.assert_allclose(match_channels(rgb, 1)[..., 0], rgb.mean(axis=2), rtol=1e-6)
    with pytest.raises(ValueError, match="takes 4-channel images and this one has 3 channels"):
        match_channels(rgb, 4)


def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path: Path) -> None:
    stored = np.zeros((4, 8), np.uint8)
    stored[0, :2] = 255  # top left as stored; orientation 6 shows it rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif)
    upright = read_image(tmp_path / "photo.png")[..., 0]
    assert upright.shape == (8, 4) and upright[:2, -1].tolist() == [1.0, 1.0]
    mask = read_mask(tmp_path / "photo.png")
    assert mask.shape == (8, 4) and np.array_equal(mask, upright > 0.5)  # the same pixels
    assert mask.sum() == 2 and mask[:2, -1].all()  # rotated, not left as stored


def test_a_camera_jpeg_with_an_orientation_tag_is_read_upright(tmp_path: Path) -> None:
    """As a phone or microscope camera writes it: JPEG, maker tags, orientation 6 (the sensor's
    top row is the picture's right edge); each quadrant's colour must land where it is seen."""
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:24, :32] = (220, 30, 30)  # stored top left: red
    stored[:24, 32:] = (30, 220, 30)  # stored top right: green
    stored[24:, :32] = (30, 30, 220)  # stored bottom left: blue
    stored[24:, 32:] = (230, 230, 230)  # stored bottom right: white
    exif = Image.Exif()
    exif.update({0x010F: "Camera Maker", 0x0110: "Model 1", 0x0132: "2026:11:29 10:00:00"})
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    upright = read_image(tmp_path / "photo.jpg")
    assert upright.shape == (64, 48, 3)  # turned: taller than wide
    seen = {  # quadrant centres of the picture as displayed, rotated 90 degrees clockwise
        "top right": upright[16, 36],
        "bottom right": upright[48, 36],
        "top left": upright[16, 12],
        "bottom left": upright[48, 12],
    }
    expected = {"top right": (220, 30, 30), "bottom right": (30, 220, 30),
                "top left": (30, 30, 220), "bottom left": (230, 230, 230)}  # fmt: skip
    for where, colour in expected.items():
        np.testing.assert_allclose(seen[where] * 255, colour, atol=12, err_msg=where)


def test_a_palette_binary_mask_is_read_by_index_not_by_colour(tmp_path: Path) -> None:
    indices = np.zeros((6, 6), np.uint8)
    indices[2:4, 1:5] = 1
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([255, 255, 255, 0, 0, 0])  # index 0 white, index 1 black
    mask.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png"), indices == 1)
