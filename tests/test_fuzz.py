"""Fuzzing: the readers and the settings parser raise only their documented errors.

Every case the fuzzer ever found lives in `tests/fuzz_corpus/` and is checked in the normal run.
The hypothesis runs (marked slow) use the profile `ci` from `conftest.py`, applied here alone:
derandomized, so one commit always gives one result. For fresh cases, run the profile `explore`
(`--hypothesis-profile=explore`; docs/reliability.md);
save what it finds under `tests/fuzz_corpus/` (readers: the file's bytes; settings: a JSON file).
"""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from trainers.data.readers import DataError, read_image, read_mask
from trainers.fit.settings import FIELDS, TrainConfig, from_dict

CORPUS = Path(__file__).parent / "fuzz_corpus"


def fuzz_profile() -> settings:
    """`explore` when the run names it (`--hypothesis-profile=explore`), else `ci`; for these
    tests alone, so a `@given` test elsewhere keeps Hypothesis's defaults."""
    named = settings.get_current_profile_name()
    return settings.default if named.startswith("explore") else settings.get_profile("ci")


FUZZ = fuzz_profile()


def check_readers(path: Path) -> tuple[str, str]:
    """`read_image` and `read_mask` give valid arrays or a `DataError` naming the file; what
    each did ("read" or "refused")."""
    outcomes = []
    try:
        image = read_image(path)
    except DataError as error:
        assert path.name in str(error)
        outcomes.append("refused")
    else:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] in (1, 3)
        assert image.min() >= 0 and image.max() <= 1
        outcomes.append("read")
    try:
        mask = read_mask(path)
    except DataError as error:
        assert path.name in str(error)
        outcomes.append("refused")
    else:
        assert mask.dtype == bool and mask.ndim == 2
        outcomes.append("read")
    return outcomes[0], outcomes[1]


DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smh])+")
POSITIVE = ("batch_size", "image_size", "patches_per_image", "in_channels")
COUNTS = ("steps", "epochs", "val_every", "warmup")


def broken_rules(values: dict) -> list[str]:
    """The documented rules of the settings (`trainers/fit/settings.py`, the README) that `values`
    break, written out again here as the oracle: unknown keys; a value of another type than its
    default's (an int for a float is fine, a bool for a number is not); positive counts; a run
    length (steps, epochs or a time budget); rates, weights, fractions and names in range."""
    defaults = TrainConfig().to_dict()
    given = {key: value for key, value in values.items() if key not in ("note", "amp")}
    broken = [f"unknown {key}" for key in given if key not in defaults]
    for key, value in given.items():
        kind = type(defaults.get(key))
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in defaults and not (
            (isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)))
            or (kind is float and number)
        ):
            broken.append(f"type of {key}")  # fmt: skip
    if broken:
        return broken
    c = {**defaults, **given}
    broken += [name for name in POSITIVE if c[name] < 1]
    broken += [name for name in COUNTS if c[name] < 0]
    text = c["time_budget"].strip().lower().replace(" ", "")
    if c["time_budget"] and (
        not DURATION.fullmatch(text)
        or not any(float(n) for n in re.findall(r"\d+(?:\.\d+)?", text))
    ):
        broken.append("time_budget")  # fmt: skip
    if not (c["steps"] or c["epochs"] or c["time_budget"]):
        broken.append("no run length")
    finite = {key: math.isfinite(c[key]) for key in ("lr", "weight_decay", "dice_weight",
                                                     "iou_weight", "object_width")}  # fmt: skip
    broken += [key for key, ok in finite.items() if not ok or c[key] < 0]
    broken += ["lr"] * (c["lr"] == 0) + ["loss weights"] * (
        c["dice_weight"] == c["iou_weight"] == 0
    )
    broken += ["scale"] * (not 0 < c["scale"] <= 1)
    broken += ["val_fraction"] * (not 0 <= c["val_fraction"] < 1)
    broken += ["threshold"] * (not 0 <= c["threshold"] < 1)
    broken += ["invert"] * (not 0 <= c["invert"] <= 1)  # a probability
    broken += ["ema"] * (not 0 <= c["ema"] < 1)  # a decay, 0 for none
    broken += ["optimizer"] * (c["optimizer"] not in ("adam", "adamw"))
    broken += ["precision"] * (c["precision"] not in ("auto", "bf16", "fp16", "fp32"))
    if (c["mean"] or c["std"]) and not (
        len(c["mean"]) == len(c["std"]) == c["in_channels"] and min(c["std"]) > 0
    ):
        broken.append("mean and std")
    return broken


def check_settings(values: dict) -> str:
    """The settings parser accepts exactly the values that break no documented rule, and names
    the problem (a ValueError) for the others; "accepted" or "refused"."""
    broken = broken_rules(values)
    try:
        TrainConfig(**from_dict(values, "fuzz"))
    except ValueError as error:
        assert broken, f"refused valid settings {values}: {error}"
        return "refused"
    assert not broken, f"accepted settings that break {broken}: {values}"
    return "accepted"


def test_the_oracle_by_hand() -> None:
    check_settings({"epochs": 0, "time_budget": "1s"})  # valid: steps and a budget
    assert broken_rules({"steps": 0, "epochs": 0}) == ["no run length"]
    assert broken_rules({"lr": 0}) == ["lr"] and broken_rules({"lr": True}) == ["type of lr"]
    assert broken_rules({"time_budget": "0s"}) == ["time_budget"]
    assert broken_rules({"mean": [0.5], "std": [0.2]}) == ["mean and std"]  # 3 channels
    assert not broken_rules({"mean": [0.5], "std": [0.2], "in_channels": 1, "lr": 1})


@pytest.mark.parametrize("path", sorted((CORPUS / "readers").iterdir()), ids=lambda path: path.name)
def test_reader_corpus_cases_give_arrays_or_a_data_error(path: Path) -> None:
    # The arrays' checks and the errors' file names are asserted inside check_readers.
    assert set(check_readers(path)) <= {"read", "refused"}


@pytest.mark.parametrize(
    "path", sorted((CORPUS / "settings").iterdir()), ids=lambda path: path.name
)
def test_settings_corpus_cases_give_a_config_or_a_value_error(path: Path) -> None:
    values = json.loads(path.read_text())
    assert check_settings(values) == ("refused" if broken_rules(values) else "accepted")


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
@FUZZ
@given(data=file_bytes(), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif"]))
def test_readers_return_valid_arrays_or_a_data_error(data: bytes, suffix: str) -> None:
    path = FOLDER / f"case{suffix}"
    path.write_bytes(data)
    try:
        assert set(check_readers(path)) <= {"read", "refused"}
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
@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=6)), VALUES))
def test_settings_parser_raises_only_value_errors(values: dict) -> None:
    try:
        check_settings(values)
    except Exception as error:
        raise AssertionError(
            f"{type(error).__name__}: {error}\nSave this case as "
            f"tests/fuzz_corpus/settings/<what-it-breaks>.json:\n{json.dumps(values)}"
        ) from error
