"""Fuzzing: the readers and the settings parser raise only their documented errors.

Every case the fuzzer ever found lives in `tests/fuzz_corpus/` and is checked in the normal run.
The hypothesis runs (marked slow) use the profile `ci` from `conftest.py`: derandomized, so one
commit always gives one result. For fresh cases, run the profile `explore` (README, Reliability);
save what it finds under `tests/fuzz_corpus/` (readers: the file's bytes; settings: a JSON file).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from trainers.config import FIELDS, TrainConfig, from_dict
from trainers.data.readers import DataError, read_image, read_mask

CORPUS = Path(__file__).parent / "fuzz_corpus"


def check_readers(path: Path) -> None:
    """`read_image` and `read_mask` give valid arrays or a `DataError` naming the file."""
    try:
        image = read_image(path)
    except DataError as error:
        assert path.name in str(error)
    else:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] in (1, 3)
        assert image.min() >= 0 and image.max() <= 1
    try:
        mask = read_mask(path)
    except DataError as error:
        assert path.name in str(error)
    else:
        assert mask.dtype == bool and mask.ndim == 2


def check_settings(values: dict) -> None:
    """The settings parser gives a valid config or a `ValueError`."""
    try:
        config = TrainConfig(**from_dict(values, "fuzz"))
    except ValueError:
        return
    assert config.steps or config.epochs or config.time_budget  # a run has a length
    assert config.steps >= 0 and config.epochs >= 0 and config.batch_size >= 1 and config.lr > 0


@pytest.mark.parametrize("path", sorted((CORPUS / "readers").iterdir()), ids=lambda path: path.name)
def test_reader_corpus_cases_give_arrays_or_a_data_error(path: Path) -> None:
    check_readers(path)


@pytest.mark.parametrize(
    "path", sorted((CORPUS / "settings").iterdir()), ids=lambda path: path.name
)
def test_settings_corpus_cases_give_a_config_or_a_value_error(path: Path) -> None:
    check_settings(json.loads(path.read_text()))


def encoded(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (9, 7, 3) if mode == "RGB" else (9, 7), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode=None).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [
    encoded(fmt, mode) for fmt in ("PNG", "JPEG", "TIFF", "BMP", "GIF") for mode in ("L", "RGB")
]


@st.composite
def file_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real small image with some bytes changed and a random length."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=256))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


FOLDER = Path(tempfile.mkdtemp(prefix="bioseg-fuzz-"))


@pytest.mark.slow
@given(data=file_bytes(), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif"]))
def test_readers_return_valid_arrays_or_a_data_error(data: bytes, suffix: str) -> None:
    path = FOLDER / f"case{suffix}"
    path.write_bytes(data)
    try:
        check_readers(path)
    except Exception as error:
        raise AssertionError(
            f"{type(error).__name__}: {error}\nSave this case as tests/fuzz_corpus/readers/"
            f"<what-it-breaks>{suffix}, bytes as hex:\n{data.hex()}"
        ) from error


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


@pytest.mark.slow
@given(st.dictionaries(st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=6)), VALUES))
def test_settings_parser_raises_only_value_errors(values: dict) -> None:
    try:
        check_settings(values)
    except Exception as error:
        raise AssertionError(
            f"{type(error).__name__}: {error}\nSave this case as "
            f"tests/fuzz_corpus/settings/<what-it-breaks>.json:\n{json.dumps(values)}"
        ) from error
