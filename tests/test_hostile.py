"""Hostile inputs through every public surface of the Space: what each sends, the exact refusal
it gets back, and that nothing was written, fetched or leaked on the way.

The app runs once for the module (`python app.py`, as tests/test_app.py starts it) with a host
token in its environment and a fake Hub (tests/hub_server.py) as its HF_ENDPOINT, which records
every request and its Authorization header. Public endpoints are driven by gradio_client; the
Teach tab's private events as the page makes them (tests/hostile_inputs.py). One fine-tune runs
in the whole file, for the tests that need a visitor's model.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hostile_inputs import (
    Page,
    RecordingHub,
    config_json,
    folder_bytes,
    zip_bomb,
    zip_of_many,
)
from PIL import Image

from tests.conftest import REPO, free_port, wait_until_listening
from tests.test_app import FUZZ_CORPUS, png_bytes
from tests.test_data import png_header
from tests.test_finetune import pair
from tests.test_medical import dicom

HOST_TOKEN = "hf_host-secret-never-sent"  # the Space's own token: no visitor's action may use it
MAX_PARAMETERS = 50_000_000  # BIOSEG_APP_MAX_PARAMETERS: typed models above it are refused
LIMIT = "67,108,864"  # the app's pixel limit, 8192 x 8192
MODEL = "dsb2018-unet (bundled)"
MENU = "Model (or type a Hub id OWNER/NAME)"
REPO_BOX, TOKEN_BOX = "Hub repo OWNER/NAME", "Your Hub token (used once, never kept)"
UPLOADS = "Or upload pairs: NAME.png with NAME_mask.png, or a zip (images/, masks/)"
KEEP, TUNE, PUSH = ("Keep the uploaded pairs", "Fine-tune the chosen model on the kept pairs",
                    "Push to the Hub")  # fmt: skip
NAN, INF = float("nan"), float("inf")
pytestmark = pytest.mark.skipif(
    not (REPO / "weights" / "dsb2018-unet" / "model.safetensors").is_file(),
    reason="no bundled dsb2018-unet weights (the app and the fine-tune need them)",
)


@pytest.fixture(scope="module")
def hub() -> Iterator[RecordingHub]:
    """The fake Hub, with three hostile model repos (only config.json is ever meant to be read)."""
    with RecordingHub() as hub:
        hub.plant("evil/huge", {"config.json": config_json("vgg16_fcn_report"),
                                "model.safetensors": b"never fetched"})  # fmt: skip
        hub.plant("evil/pretrained", {"config.json": config_json(
            "unet", model_kwargs={"pretrained": True})})  # fmt: skip
        hub.plant("evil/elsewhere", {"config.json": config_json(
            "unet", model_kwargs={"encoder": "hf-hub:evil/other"})})  # fmt: skip
        yield hub


@pytest.fixture(scope="module")
def server(hub: RecordingHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`python app.py` on a free port, the host's token in its environment, the fake Hub as its
    Hub, its temporary files (the output folder: answers and sessions) under `tmp`."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "tmp").mkdir()
    port = free_port()
    env = {**os.environ, "HF_TOKEN": HOST_TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(folder / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "TMPDIR": str(folder / "tmp"),
           "GRADIO_ANALYTICS_ENABLED": "False", "BIOSEG_RUNS": str(folder / "runs"),
           "BIOSEG_FINETUNE_SECONDS": "3", "BIOSEG_FINETUNE_MB": "64",
           "BIOSEG_APP_MAX_PARAMETERS": str(MAX_PARAMETERS),
           "BIOSEG_ENGINE": "eager"}  # fmt: skip
    log = folder / "app.log"
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO,
                               env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    wait_until_listening(process, port, log)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", tmp=folder / "tmp", log=log)
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(f"{server.url}/", verbose=False)


@pytest.fixture
def page(server) -> Page:
    """A new visitor's page."""
    return Page(server.url)


@pytest.fixture
def cells(tmp_path: Path) -> tuple[Path, Path]:
    """A 64 x 64 image and its 0/255 mask."""
    return pair(tmp_path, "cells")


@pytest.fixture(scope="module")
def tuned(server, tmp_path_factory) -> SimpleNamespace:
    """A visitor who kept a pair and fine-tuned the bundled U-Net on it (the file's one
    fine-tune): their page, and their model's token."""
    visitor = Page(server.url)
    kept = visitor.click(KEEP, {UPLOADS: visitor.upload(*pair(tmp_path_factory.mktemp("p"), "a"))})
    assert kept.ok, kept.error
    done = visitor.click(TUNE, {MENU: MODEL})
    assert done.ok, done.error
    return SimpleNamespace(page=visitor, token=done.output[2]["value"])


def sessions(server) -> list[Path]:
    """The visitors' session folders on the server."""
    return sorted(server.tmp.glob("bioseg-app-*/**/session-*"))


def host_token_sent(hub: RecordingHub) -> list[str]:
    """The requests that reached the fake Hub with the host's token."""
    return [request for request, auth in hub.authorizations if auth and HOST_TOKEN in auth]


def segment(client, model: str, image: Path | None, mask: Path | None = None,
            threshold: float = 0.5, frame: float = 0) -> tuple:  # fmt: skip
    from gradio_client import handle_file

    return client.predict(model, None, image and handle_file(str(image)),
                          mask and handle_file(str(mask)), threshold, frame,
                          api_name="/segment")  # fmt: skip


def refused(call, *args, match: str, **kwargs) -> str:
    """`call(*args)` is refused with a message matching `match` (a crash has none); it."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=match) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --- Image files on /segment -----------------------------------------------------------------


def no_pixel_data(path: Path) -> None:
    import pydicom

    dataset = pydicom.dcmread(dicom(path, np.zeros((8, 8), np.uint16)))
    del dataset.PixelData
    dataset.save_as(path)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("bomb.png", lambda p: png_header(p, 20_000, 20_000),
         rf"bomb\.png: .*exceeds the limit of {LIMIT}"),
        ("cut.png", lambda p: p.write_bytes(png_bytes()[:300]), "not a readable image"),
        ("notes.png", lambda p: p.write_text("not an image"), "not a readable image"),
        ("empty.png", lambda p: p.write_bytes(b""), "empty"),
        ("no-pixels.dcm", no_pixel_data, "a DICOM file without pixel data"),
        ("bogus-tag.tif", lambda p: shutil.copy(
            FUZZ_CORPUS / "pillow-tiff-stripoffsets-as-ascii.tif", p), "not a readable TIFF"),
    ],
    ids=["png-bomb-20000x20000", "truncated-png", "text-named-png", "zero-bytes",
         "dicom-without-pixels", "tiff-bogus-tag"],
)  # fmt: skip
def test_a_bad_image_file_on_segment_is_refused_naming_it(client, tmp_path, name, make, message):
    """Sends the file as /segment's image file; expects the reader's refusal naming it."""
    make(tmp_path / name)
    said = refused(segment, client, MODEL, tmp_path / name, match=message)
    assert name in said


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((32, 48), np.uint8),
         r"The target mask mask\.png is 48x32 pixels but the image is 64x64: a target must "
         r"match its image"),
        (np.repeat(np.array([0, 7, 200], np.uint8), 64 * 22)[: 64 * 64].reshape(64, 64),
         r"a binary mask holds 0/255 or 0/1, this one has the values 0, 7, 200"),
        (np.full((64, 64), 0.5, np.float32), r"32-bit float images are not supported"),
    ],
    ids=["other-size", "odd-values", "float-values"],
)  # fmt: skip
def test_a_bad_target_mask_is_not_used_and_said(client, cells, tmp_path, values, message):
    """Sends a mask of another size / with values 0, 7, 200 / of floats as the target; expects
    the prediction, no metrics, and the note saying why the target was not used."""
    mask = tmp_path / ("mask.tif" if values.dtype == np.float32 else "mask.png")
    Image.fromarray(values).save(mask)
    answer = segment(client, MODEL, cells[0], mask)
    note = answer[6]
    assert "**Target not used:**" in note and re.search(message, note)
    assert answer[1] is not None and answer[4]["data"] in ([], None)


@pytest.mark.parametrize(
    ("threshold", "message"),
    [(-1.0, r"Value -1.0 is less than minimum value 0.01"),
     (1e308, r"Value 1e\+308 is greater than maximum value 0.99")],
    ids=["negative", "huge"],
)  # fmt: skip
def test_a_threshold_outside_the_slider_is_refused(client, cells, threshold, message) -> None:
    """Sends /segment a threshold of -1 / 1e308; expects the slider's bounds in the refusal."""
    refused(segment, client, MODEL, cells[0], threshold=threshold, match=message)


def test_a_nan_threshold_on_segment_is_refused(page, cells) -> None:
    """Sends /segment threshold NaN as raw JSON; expects a refusal naming the threshold."""
    answer = page.call("segment", [MODEL, None, page.upload(cells[0])[0], None, NAN, 0])
    assert not answer.ok and answer.error and "threshold" in answer.error.lower()


@pytest.mark.parametrize(
    ("endpoint", "frame", "message"),
    [("segment", -1, r"Value -1 is less than minimum value 0"),
     ("segment", 10**12, r"frame 1000000000000 is out of range; the file has 1"),
     ("predict", -5, r"frame -5 is out of range; the file has 1")],
    ids=["segment-negative", "segment-huge", "predict-negative"],
)  # fmt: skip
def test_a_frame_index_out_of_range_is_refused(client, cells, endpoint, frame, message) -> None:
    """Sends frame -1 / 10**12 / -5 for a one-frame PNG; expects the range in the refusal."""
    from gradio_client import handle_file

    if endpoint == "segment":
        refused(segment, client, MODEL, cells[0], frame=frame, match=message)
    else:
        refused(client.predict, MODEL, handle_file(str(cells[0])), None, frame,
                api_name="/predict", match=message)  # fmt: skip


@pytest.mark.parametrize("endpoint", ["segment", "predict"])
@pytest.mark.parametrize("frame", [NAN, INF], ids=["nan", "inf"])
def test_a_non_finite_frame_is_refused_with_a_message(page, cells, endpoint, frame) -> None:
    """Sends frame NaN / Infinity as raw JSON; expects a refusal with a message, not a crash."""
    image = page.upload(cells[0])[0]
    data = [MODEL, None, image, None, 0.5, frame] if endpoint == "segment" else [
        MODEL, image, None, frame]  # fmt: skip
    answer = page.call(endpoint, data)
    assert not answer.ok and answer.error and "frame" in answer.error


@pytest.mark.parametrize("threshold", [-3.0, 1e300, NAN, "abc"],
                         ids=["negative", "huge", "nan", "text"])  # fmt: skip
def test_a_threshold_outside_0_1_on_predict_is_refused(page, cells, threshold) -> None:
    """Sends /predict threshold -3 / 1e300 / NaN / 'abc'; expects a refusal naming it."""
    answer = page.call("predict", [MODEL, page.upload(cells[0])[0], threshold, 0])
    assert not answer.ok and answer.error and "threshold" in answer.error.lower()


def test_a_server_path_posing_as_an_upload_is_refused_unread(page) -> None:
    """Sends /predict a FileData naming /etc/passwd (never uploaded); expects Gradio to refuse
    it before the app runs: no answer, no byte of the file in what comes back."""
    stolen = {"path": "/etc/passwd", "orig_name": "passwd", "meta": {"_type": "gradio.FileData"}}
    answer = page.call("predict", [MODEL, stolen, None, 0])
    assert not answer.ok and "root:" not in repr(answer)


# --- Typed model ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "typed"),
    [("segment", str(REPO / "weights" / "dsb2018-unet")), ("predict", "../weights/x"),
     ("segment", "owner/.."), ("predict", "owner/../../etc")],
    ids=["absolute-path", "relative-path", "dotdot-name", "dotdot-path"],
)  # fmt: skip
def test_a_typed_path_is_no_model_id(client, hub, cells, endpoint, typed) -> None:
    """Sends a path (or a repo id with '..') as the model; expects 'invalid Hub repo id', and
    nothing asked of the Hub."""
    from gradio_client import handle_file

    before = len(hub.requests)
    if endpoint == "segment":
        refused(segment, client, typed, cells[0], match=r"invalid Hub repo id")
    else:
        refused(client.predict, typed, handle_file(str(cells[0])), None, 0,
                api_name="/predict", match="invalid Hub repo id")  # fmt: skip
    assert hub.requests[before:] == []


def test_a_typed_id_naming_a_local_folder_is_asked_of_the_hub_without_a_token(
    client, hub, cells
) -> None:
    """Sends 'weights/dsb2018-unet' (a bundled folder's relative path, a valid repo id);
    expects the Hub's 'not found', asked without the host's token, the folder never read."""
    said = refused(segment, client, "weights/dsb2018-unet", cells[0],
                   match=r"Could not load model 'weights/dsb2018-unet'")  # fmt: skip
    assert "Hub repo weights/dsb2018-unet" in said
    assert any("/weights/dsb2018-unet/resolve/" in r for r in hub.requests)
    assert host_token_sent(hub) == []


@pytest.mark.parametrize(
    ("repo", "message"),
    [("evil/huge", rf"describes a model of [\d,]+ parameters, over the limit of "
                   rf"{MAX_PARAMETERS:,}; its weights were not fetched"),
     ("evil/pretrained", r"model_kwargs may not set pretrained"),
     ("evil/elsewhere",
      r"model_kwargs encoder name a path or another repo \('hf-hub:evil/other'\)")],
    ids=["oversized-vgg16_fcn_report", "pretrained-true", "path-like-kwarg"],
)  # fmt: skip
def test_a_hostile_hub_config_is_refused_before_its_weights(client, hub, cells, repo, message):
    """Types a Hub repo whose config.json describes a 290M-parameter model / sets pretrained /
    names another repo in model_kwargs; expects the refusal, model.safetensors never fetched
    and the host's token never sent."""
    refused(segment, client, repo, cells[0], match=message)
    assert not any(r.endswith(f"/{repo}/resolve/main/model.safetensors") for r in hub.requests)
    assert any(r.endswith(f"/{repo}/resolve/main/config.json") for r in hub.requests)
    assert host_token_sent(hub) == []


@pytest.mark.parametrize(
    ("typed", "message"),
    [(str(REPO / "weights" / "dsb2018-unet"), r"invalid Hub repo id"),
     ("evil/huge", rf"describes a model of [\d,]+ parameters, over the limit of "
                   rf"{MAX_PARAMETERS:,}; its weights were not fetched")],
    ids=["local-path", "oversized-hub-model"],
)  # fmt: skip
def test_a_hostile_fine_tune_base_is_refused(page, hub, cells, typed, message) -> None:
    """Keeps a pair, then clicks Fine-tune with a server path / an oversized Hub model as the
    base; expects the refusal before any fine-tune, no weights fetched, no host token."""
    assert page.click(KEEP, {UPLOADS: page.upload(*cells)}).ok
    answer = page.click(TUNE, {MENU: typed})
    assert not answer.ok and answer.error and re.search(message, answer.error)
    assert not any(r.endswith("/evil/huge/resolve/main/model.safetensors") for r in hub.requests)
    assert host_token_sent(hub) == []


# --- A visitor's fine-tuned model ----------------------------------------------------------


@pytest.mark.parametrize("token", ["", "   \t"], ids=["empty", "blank"])
def test_a_push_without_the_visitor_s_token_never_uses_the_host_s(tuned, hub, token) -> None:
    """Clicks Push for the visitor's own model with an empty / blank token, HF_TOKEN set in the
    server's environment; expects the request for their token and no request to the Hub."""
    before = len(hub.requests)
    answer = tuned.page.click(PUSH, {MENU: tuned.token, REPO_BOX: "me/tuned",
                                     TOKEN_BOX: token})  # fmt: skip
    assert answer.error == "Paste your own Hub token (with write access): the push uses yours."
    assert hub.requests[before:] == [] and host_token_sent(hub) == []


def test_a_push_to_a_path_like_repo_is_refused_before_the_hub(tuned, hub) -> None:
    """Clicks Push with repo '../evil' and a token; expects 'invalid Hub repo id', no request."""
    before = len(hub.requests)
    answer = tuned.page.click(PUSH, {MENU: tuned.token, REPO_BOX: "../evil",
                                     TOKEN_BOX: "hf_visitor"})  # fmt: skip
    assert answer.error and answer.error.startswith("invalid Hub repo id '../evil'")
    assert hub.requests[before:] == []


def test_another_visitor_cannot_push_someone_s_model(tuned, hub, page) -> None:
    """A second visitor clicks Push naming the first's model token; expects 'Pick one of your
    fine-tuned models', no request to the Hub."""
    before = len(hub.requests)
    answer = page.click(PUSH, {MENU: tuned.token, REPO_BOX: "me/stolen",
                               TOKEN_BOX: "hf_visitor"})  # fmt: skip
    assert answer.error == "Pick one of your fine-tuned models in the Segment tab's menu first."
    assert hub.requests[before:] == []


@pytest.mark.parametrize("endpoint", ["segment", "predict", "compare"])
def test_a_fine_tuned_model_s_token_means_nothing_to_another_client(tuned, client, cells,
                                                                     endpoint) -> None:  # fmt: skip
    """Another client sends the first visitor's model token as the model of /segment /
    /predict / /compare; expects the token refused as no model id."""
    from gradio_client import handle_file

    match = rf"invalid Hub repo id '{tuned.token}'"
    image = handle_file(str(cells[0]))
    if endpoint == "segment":
        refused(segment, client, tuned.token, cells[0], match=match)
    elif endpoint == "predict":
        refused(client.predict, tuned.token, image, None, 0, api_name="/predict", match=match)
    else:
        refused(client.predict, tuned.token, MODEL, image, None, 0.5, api_name="/compare",
                match=match)  # fmt: skip


def test_an_hour_old_session_outlives_another_visitor_s_segment(tuned, server, client, cells):
    """Ages every file and folder of the app's output folder two hours, then another client's
    /segment (which sweeps old answers); expects the first visitor's session files all there,
    and their fine-tuned model still segmenting for them."""
    output = next(server.tmp.glob("bioseg-app-*"))
    kept = sorted(p for folder in sessions(server) for p in folder.rglob("*") if p.is_file())
    assert any(p.name == "model.safetensors" for p in kept)
    old = time.time() - 7200
    for path in [output, *output.rglob("*")]:
        os.utime(path, (old, old), follow_symlinks=False)
    segment(client, MODEL, cells[0])  # another visitor
    assert [p for p in kept if not p.exists()] == []
    image = tuned.page.upload(cells[0])[0]
    answer = tuned.page.call("segment", [tuned.token, None, image, None, 0.5, 0])
    assert answer.ok, answer.error


# --- Uploaded pairs and zips (the Teach tab, as the page sends them) ---------------------------


def test_a_zip_bomb_is_refused_from_its_directory_writing_nothing(page, server, tmp_path):
    """Uploads a 1.4 MB zip of one 300 MB member of zeros (the session's budget: 64 MB) and
    clicks Keep; expects the budget refusal and not one byte written under any session."""
    bomb = zip_bomb(tmp_path / "bomb.zip", 300)
    files = page.upload(bomb)
    before = sum(folder_bytes(folder) for folder in sessions(server))
    answer = page.click(KEEP, {UPLOADS: files})
    assert answer.error == ("bomb.zip unpacked needs 300.0 MB but this session has 64.0 MB of "
                            "its 64.0 MB left: drop pairs or models first")  # fmt: skip
    assert sum(folder_bytes(folder) for folder in sessions(server)) == before
    assert list(server.tmp.glob("bioseg-app-*/**/unpacked")) == []


def members(path: Path, *names: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(zipfile.ZipInfo(name), png_bytes())
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda p: zip_of_many(p, 10_000), r"evil\.zip: 10000 files, more than the 64 of 32 pairs"),
     (lambda p: members(p, "images/a.png", "../masks/a.png"),
      r"evil\.zip: \.\./masks/a\.png lies outside the zip"),
     (lambda p: members(p, "images/a.png", "/tmp/masks/a.png"),
      r"evil\.zip: /tmp/masks/a\.png lies outside the zip"),
     (lambda p: p.write_text("PK, but not a zip"), r"evil\.zip: not a readable zip")],
    ids=["10000-tiny-files", "dotdot-member", "absolute-member", "not-a-zip"],
)  # fmt: skip
def test_a_hostile_zip_is_refused_whole(page, server, tmp_path, make, message) -> None:
    """Uploads a zip of 10,000 files / with a '../' member / with an absolute member / that is
    no zip, and clicks Keep; expects the refusal, nothing unpacked, nothing kept."""
    make(tmp_path / "evil.zip")
    answer = page.click(KEEP, {UPLOADS: page.upload(tmp_path / "evil.zip")})
    assert not answer.ok and answer.error and re.match(message, answer.error)
    assert list(server.tmp.glob("bioseg-app-*/**/unpacked")) == []
    assert not (tmp_path / "masks").exists() and not Path("/tmp/masks/a.png").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [(lambda d: [pair(d, "cells")[0]], r"cells\.png: no mask cells_mask\.png among the files"),
     (lambda d: [pair(d, "cells")[0], pair(d / "s", "cells", (32, 48))[1]],
      r"cells_mask\.png: the mask is 48x32 pixels but the image is 64x64"),
     (lambda d: [png_header(pair(d, "bomb")[0], 20_000, 20_000), d / "bomb_mask.png"],
      rf".*bomb\.png: .*exceeds the limit of {LIMIT}")],
    ids=["image-without-mask", "mask-of-another-size", "png-bomb-image"],
)  # fmt: skip
def test_a_bad_uploaded_pair_is_refused_naming_it(page, tmp_path, files, message) -> None:
    """Uploads an image with no mask / a mask of another size / a PNG bomb as the image, and
    clicks Keep; expects the refusal naming the file, and no pair kept."""
    answer = page.click(KEEP, {UPLOADS: page.upload(*files(tmp_path))})
    assert not answer.ok and answer.error and re.match(message, answer.error)


def test_more_pairs_than_the_limit_are_refused(tmp_path, monkeypatch) -> None:
    """Keeps a third pair in a session whose limit is two (Session.keep, as the server calls
    it); expects the limit's refusal and the two kept pairs untouched."""
    from demo import finetune
    from trainers.data.readers import DataError

    monkeypatch.setattr(finetune, "MAX_PAIRS", 2)
    session = finetune.Session.new(tmp_path)
    image, mask = pair(tmp_path / "in", "p")
    for _ in range(2):
        session.keep(str(image), str(mask), "p")
    with pytest.raises(DataError, match=r"^2 pairs are kept already \(the limit\): drop one"):
        session.keep(str(image), str(mask), "p")
    assert session.pairs == ["p", "p-2"]
    session.end()


# --- Library calls the server makes ------------------------------------------------------------


def test_a_config_setting_pretrained_is_refused_by_from_pretrained(tmp_path) -> None:
    """Loads a folder whose config.json sets model_kwargs pretrained=true; expects 'may not set
    pretrained' (ImageNet weights would be fetched before the saved ones overwrite them)."""
    import json

    import zoo

    base = REPO / "weights" / "dsb2018-unet"
    config = json.loads((base / "config.json").read_text())
    config["model_kwargs"] = {**config["model_kwargs"], "pretrained": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(base / "model.safetensors")
    with pytest.raises(ValueError, match=r"model_kwargs may not set pretrained"):
        zoo.from_pretrained(tmp_path)


def test_pillow_s_limit_is_never_lifted_while_reading(tmp_path, monkeypatch) -> None:
    """Reads a 16-bit label PNG (image, labels, objects; a reader's limit above the process's)
    after set_pixel_limit(8192 * 8192); expects Pillow's limit, seen inside each Image.open,
    to be 8192 * 8192 every time."""
    from trainers.data import readers

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back after
    monkeypatch.setattr(readers, "_PROCESS_LIMIT", getattr(readers, "_PROCESS_LIMIT", None))
    readers.set_pixel_limit(8192 * 8192)
    seen, real_open = [], Image.open

    def recording_open(*args, **kwargs):
        seen.append(Image.MAX_IMAGE_PIXELS)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    labels = tmp_path / "labels.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 700).save(labels)
    readers.read_image(labels, max_pixels=20_000 * 20_000)
    readers.read_mask(labels, mode="labels", max_pixels=20_000 * 20_000)
    readers.read_objects([labels])
    assert seen and set(seen) == {8192 * 8192}


# --- Command lines: one `error:` line, exit status 2 -------------------------------------------


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})  # fmt: skip


def run_main(capsys: pytest.CaptureFixture[str], module: str, *argv: str) -> tuple[int, str]:
    """`python -m module argv` in this process (an uncaught exception fails the test): its exit
    status and standard error."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(list(argv))
    return exited.value.code, capsys.readouterr().err


def test_push_cli_refuses_a_dotdot_repo_before_the_hub(hub) -> None:
    """Runs `trainers.push weights/dsb2018-unet owner/..` with HF_TOKEN and the fake Hub set;
    expects one 'error: invalid Hub repo id' line, exit 2, no request to the Hub."""
    before = len(hub.requests)
    done = cli("trainers.push", str(REPO / "weights" / "dsb2018-unet"), "owner/..",
               env={"HF_TOKEN": HOST_TOKEN, "HF_ENDPOINT": hub.url})  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().startswith("error: invalid Hub repo id")
    assert len(done.stderr.strip().splitlines()) == 1 and hub.requests[before:] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["trainers.predict", "--weights", "../weights/x", "--input", "IMAGE", "--output", "OUT"],
      "error: '../weights/x' is neither an existing folder nor a Hub repo id"),
     (["trainers.train", "--finetune", "../etc", "--data", "folder:DIR", "--steps", "1"],
      "error: '../etc' is neither an existing folder nor a Hub repo id")],
    ids=["predict-dotdot-weights", "train-dotdot-finetune"],
)  # fmt: skip
def test_a_cli_refuses_a_path_like_model_in_one_line(tmp_path, capsys, argv, message) -> None:
    """Runs predict / train with '../x' as the weights / the fine-tune base; expects one
    'error:' line naming it and exit 2."""
    image = pair(tmp_path / "in", "cells")[0]
    swap = {"IMAGE": str(image), "OUT": str(tmp_path / "out"), "folder:DIR": f"folder:{tmp_path}"}
    status, stderr = run_main(capsys, *(swap.get(arg, arg) for arg in argv))
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and errors[0].startswith(message)


def test_predict_cli_records_a_png_bomb_as_failed_without_decoding_it(tmp_path, capsys) -> None:
    """Runs trainers.predict over a study holding a 30000 x 30000 PNG header; expects the image
    listed in errors.csv with the pixel limit, no mask written, exit 1 (some images failed)."""
    study = tmp_path / "study"
    study.mkdir()
    png_header(study / "bomb.png", 30_000, 30_000)
    status, _ = run_main(capsys, "trainers.predict", "--weights",
                         str(REPO / "weights" / "dsb2018-unet"), "--input", str(study),
                         "--output", str(tmp_path / "out"))  # fmt: skip
    assert status == 1
    errors = (tmp_path / "out" / "errors.csv").read_text()
    assert "bomb.png" in errors and "exceeds the limit of 400,000,000" in errors
    assert not list((tmp_path / "out").glob("*.png"))


def test_predict_cli_refuses_a_nan_threshold(tmp_path, capsys) -> None:
    """Runs trainers.predict --threshold nan; expects one 'error:' line and exit 2."""
    image = pair(tmp_path / "in", "cells")[0]
    status, stderr = run_main(capsys, "trainers.predict", "--weights",
                              str(REPO / "weights" / "dsb2018-unet"), "--input", str(image),
                              "--output", str(tmp_path / "out"), "--threshold", "nan")  # fmt: skip
    assert status == 2 and "error:" in stderr and "threshold" in stderr


def test_no_request_ever_carried_the_host_s_token(hub) -> None:
    """After every test above: not one request reached the fake Hub with the host's token."""
    assert hub.authorizations and host_token_sent(hub) == []
