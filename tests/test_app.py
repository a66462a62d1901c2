"""The web demo end to end: the app on localhost, driven by gradio_client and by Chromium."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from demo.views import answer_folder, class_names, render
from tests.conftest import REPO, SHARED_DATA, free_port, wait_until_listening
from tests.test_data import png_header
from trainers.data.medical import Decoded
from trainers.scores import metrics
from trainers.scores.plots import FN, TP

DRIVE = SHARED_DATA / "DRIVE" / "test"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")  # found as .ci/run finds it
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]  # fmt: skip


def browser_test(test: Callable) -> Callable:
    """Marked `browser`, and skipped where there is no Chromium to drive."""
    needs = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Debian chromium at {CHROMIUM}")
    return pytest.mark.browser(needs(test))


SERVER_PIDS: dict[str, int] = {}  # app URL -> process id, for the memory figures
pytestmark = pytest.mark.skipif(
    not any((REPO / "weights").glob("*/model.safetensors")),
    reason="no bundled weights in weights/ (the demo needs at least one model)",
)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's examples folder: the committed DSB 2018 pairs, and a DRIVE image/target pair
    when the shared data is here (DRIVE's images are never committed)."""
    folder = tmp_path_factory.mktemp("examples")
    shutil.copytree(REPO / "examples" / "dsb2018", folder / "dsb2018")
    shutil.copytree(REPO / "examples" / "hippocampus", folder / "hippocampus")
    if DRIVE.is_dir():
        (folder / "drive").mkdir()
        Image.open(DRIVE / "images" / "01_test.tif").save(folder / "drive" / "01_test.png")
        mask = np.asarray(Image.open(DRIVE / "1st_manual" / "01_manual1.gif")) > 0
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "drive" / "01_test_mask.png")
    return folder


@pytest.fixture
def drive_pair(examples: Path) -> tuple[Path, Path]:
    """The DRIVE image and its target, as laid out in the examples folder."""
    image, mask = examples / "drive" / "01_test.png", examples / "drive" / "01_test_mask.png"
    if not image.is_file():
        pytest.skip(f"shared data {DRIVE} is absent")
    return image, mask


@pytest.fixture(scope="module")
def app_url(examples: Path) -> Iterator[str]:
    """`python app.py` on a free localhost port, stopped after the module's tests."""
    port = free_port()
    env = {
        **os.environ,
        "BIOSEG_EXAMPLES": str(examples),
        "BIOSEG_RUNS": str(examples.parent / "runs"),  # none: the bundled models, as in CI
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",  # tests never contact the real Hub
        "HF_HOME": str(examples.parent / "hf"),
        "BIOSEG_FINETUNE_SECONDS": "3",  # the fine-tune's time box (its plan inside), short
        "BIOSEG_ENGINE": "eager",  # no export nor timing: the engines are test_engines' job
        "TMPDIR": str(examples.parent / "tmp"),  # the app's output folder, for the tests to see
    }
    (examples.parent / "tmp").mkdir(exist_ok=True)
    log = examples.parent / "app.log"  # a file, not a pipe: an unread pipe would fill and block
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    SERVER_PIDS[url] = process.pid
    wait_until_listening(process, port, log)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(app_url: str):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def models():
    """The page's models, of this environment's settings (as `import app` builds them), run
    eagerly: the engine's measured choice (an ONNX export and timings) is test_engines' job."""
    from demo.models import Models
    from demo.settings import settings_from_environment

    return Models.of(dataclasses.replace(settings_from_environment(), engine="eager"))


@pytest.fixture(scope="module")
def segmenter(models):
    from demo.segment import Segmenter

    return Segmenter(models, models.settings.max_pixels)


@pytest.fixture(scope="module")
def editor(segmenter):
    from demo.editor import Editor

    return Editor(segmenter)


def segment(client, image: Path, mask: Path | None = None, file: Path | None = None):
    from gradio_client import handle_file

    model = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/segment" in model
    return client.predict(
        "drive-unet (bundled)",
        handle_file(str(image)) if image else None,
        handle_file(str(file)) if file else None,
        handle_file(str(mask)) if mask else None,
        0.5,
        api_name="/segment",
    )


def test_api_returns_the_mask_and_metrics_that_match_it(client, drive_pair) -> None:
    image, mask = drive_pair
    target_view, predicted, errors, slider, table, mask_file, note, *_ = segment(
        client, image, mask
    )
    predicted_mask = np.asarray(Image.open(mask_file))
    assert predicted_mask.shape == (584, 565) and set(np.unique(predicted_mask)) <= {0, 255}
    target = np.asarray(Image.open(mask)) > 0
    expected = metrics.binary_metrics(predicted_mask > 0, target)
    header, row = table["headers"], table["data"][0]
    assert header == ["class", "dice", "iou", "hd95", "precision", "recall"]
    assert row[0] == "vessel"
    for name, value in zip(header[1:], row[1:], strict=True):
        assert value == pytest.approx(expected[name], abs=1e-4)
    assert row[1] > 0.6  # the bundled DRIVE model finds the vessels
    for view in (target_view, predicted, errors, *slider):  # the slider: image | prediction
        assert Image.open(view).size == (565, 584)
    assert "vessel" in note


def test_the_scripts_predict_answers_an_image_with_its_mask_and_a_volume_with_its_labels(
    client, examples: Path
) -> None:
    from gradio_client import handle_file

    image = examples / "dsb2018" / "fluorescence-98a46348.png"
    mask_file, record = client.predict(
        "dsb2018-unet (bundled)", handle_file(str(image)), None, 0, api_name="/predict"
    )
    mask = np.asarray(Image.open(mask_file))
    width, height = Image.open(image).size
    assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
    assert record["size"] == [width, height] and record["classes"] == ["background", "nucleus"]
    assert record["mask"] == Path(mask_file).name and 0 < record["threshold"] < 1
    volume = examples / "hippocampus" / "hippocampus_084.nii.gz"
    label_file, record = client.predict(
        "hippocampus-unet3d", handle_file(str(volume)), None, 0, api_name="/predict"
    )  # a volume model, named by its folder
    written, given = nib.load(label_file), nib.load(volume)
    assert written.shape == given.shape == (34, 52, 37) and record["size"] == [34, 52, 37]
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-5)
    labels = np.asarray(written.dataobj)
    assert record["classes"] == ["background", "Anterior", "Posterior"]
    # 1 mm voxels: a class's mL is its voxel count / 1000
    expected = {"Anterior": (labels == 1).sum() / 1000, "Posterior": (labels == 2).sum() / 1000}
    assert record["volumes_ml"] == pytest.approx(expected, abs=1e-3)
    assert record["spacing_mm"] == [1.0, 1.0, 1.0] and record["modality"] is None  # NIfTI
    assert "warning" not in record and min(expected.values()) > 0.5  # the structures were found


def test_compare_shows_two_models_side_by_side_with_their_metrics(client, drive_pair) -> None:
    from gradio_client import handle_file

    image, mask = drive_pair
    models = ["drive-unet (bundled)", "isbi2012-unet (bundled)"]
    view_a, view_b, table = client.predict(
        *models, handle_file(str(image)), handle_file(str(mask)), 0.5, api_name="/compare"
    )
    assert Image.open(view_a).size == Image.open(view_b).size == (565, 584)
    assert not np.array_equal(np.asarray(Image.open(view_a)), np.asarray(Image.open(view_b)))
    assert [row[:2] for row in table["data"]] == [[models[0], "vessel"], [models[1], "membrane"]]
    dice = {row[0]: row[2] for row in table["data"]}
    assert dice[models[0]] > 0.6 > dice[models[1]]  # the DRIVE model wins on a DRIVE image


def test_mismatched_target_gets_a_message_not_a_crash(client, tmp_path: Path) -> None:
    image, small = tmp_path / "scan.png", tmp_path / "small_mask.png"
    Image.fromarray(np.full((150, 200, 3), 90, np.uint8)).save(image)
    Image.fromarray(np.zeros((100, 80), np.uint8)).save(small)
    result = segment(client, image, small)
    assert "80x100 pixels but the image is 200x150" in result[6]
    assert result[1] is not None and result[4]["data"] in ([], None)  # prediction, no metrics


def test_16_bit_png_and_a_4096_wide_tiff_go_through(client, tmp_path: Path) -> None:
    """A 16-bit PNG, and a TIFF of 4096 x 1024 (tiled in both directions: 9 x 3 tiles of 512),
    come back as masks of their own size."""
    deep = tmp_path / "deep.png"
    ramp = (np.linspace(0, 65535, 300 * 200).reshape(300, 200)).astype(np.uint16)
    Image.fromarray(ramp).save(deep)
    result = segment(client, None, file=deep)
    assert np.asarray(Image.open(result[5])).shape == (300, 200)
    large = tmp_path / "large.tif"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1024, 4096), dtype=np.uint8)).save(large)
    result = segment(client, None, file=large)
    assert np.asarray(Image.open(result[5])).shape == (1024, 4096)


FUZZ_CORPUS = Path(__file__).parent / "fuzz_corpus" / "readers"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def medical_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 16-bit grey DICOM with a window and 0.5 mm pixels, a three-plane OME-TIFF Z stack with
    0.2 um pixels, and the target they share: a disc, 96x96."""
    from tests.test_medical import dicom

    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 40) ** 2 <= 20**2
    mask = tmp_path / "disc_mask.png"
    Image.fromarray(disc.astype(np.uint8) * 255).save(mask)
    stored = np.where(disc, 1200, 200).astype(np.uint16)
    scan = dicom(tmp_path / "scan.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024,
                 WindowCenter=40, WindowWidth=400, PixelSpacing=[0.5, 0.5])  # fmt: skip
    stack = np.stack([np.where(disc, 1000 * z, 0).astype(np.uint16) for z in range(1, 4)])
    ome = tmp_path / "stack.ome.tif"
    sizes = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2}
    tifffile.imwrite(ome, stack, ome=True, metadata=sizes)
    return scan, ome, mask


def test_a_windowed_dicom_and_an_ome_tiff_plane_with_hd95_in_physical_units(
    client, examples: Path, medical_files: tuple[Path, Path, Path]
) -> None:
    from gradio_client import handle_file

    from tests.test_medical import PATIENT

    scan, ome, mask = medical_files
    *views, table, mask_file, note = client.predict(
        "drive-unet (bundled)", None, handle_file(str(scan)), handle_file(str(mask)), 0.5, 0,
        api_name="/segment",
    )[:7]  # fmt: skip
    assert "shown through its window centre 40, width 400 (the file's)" in note
    assert "pixel 0.5 x 0.5 mm" in note and "**HD95 in mm:** vessel" in note
    assert np.asarray(Image.open(mask_file)).shape == (96, 96)
    tiff_note = client.predict(
        "drive-unet (bundled)",
        None,
        handle_file(str(ome)),
        handle_file(str(mask)),
        0.5,
        2,
        api_name="/segment",
    )[6]
    assert "plane 2 of 3 (Z stack)" in tiff_note and "**HD95 in µm:**" in tiff_note
    with pytest.raises(Exception, match="plane 3 is out of range"):
        client.predict("drive-unet (bundled)", None, handle_file(str(ome)), None, 0.5, 3,
                       api_name="/segment")  # fmt: skip
    # The patient's name: in no answer, no file name, no line of the server's log.
    answer = repr((views, table, mask_file, note))
    assert PATIENT.split("^")[0] not in answer
    assert PATIENT.split("^")[0] not in (examples.parent / "app.log").read_text()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.png", lambda p: p.write_bytes(b""), "empty"),
        ("notes.png", lambda p: p.write_text("not an image"), "not a readable image"),
        ("cut.png", lambda p: p.write_bytes(png_bytes()[:300]), "not a readable"),
        ("bomb.png", lambda p: png_header(p, 100_000, 100_000), "exceeds the limit"),
        (  # a fuzzing find: a strip-offsets tag stored as text (now read by tifffile)
            "ascii-offsets.tif",
            lambda p: p.write_bytes(
                (FUZZ_CORPUS / "pillow-tiff-stripoffsets-as-ascii.tif").read_bytes()
            ),
            "not a readable TIFF",
        ),
    ],
)
def test_bad_image_files_get_a_message_naming_them(client, tmp_path, name, make, message):
    from gradio_client.exceptions import AppError

    path = tmp_path / name
    make(path)
    with pytest.raises(AppError, match=message) as caught:
        segment(client, None, file=path)
    assert name in str(caught.value)


@pytest.mark.parametrize("typed", ["weights/drive-unet", "tests/conftest.py", "../etc/passwd"])
def test_a_typed_model_id_never_reaches_files_on_the_server(client, tmp_path, typed) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image = tmp_path / "scan.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(image)
    with pytest.raises(AppError) as caught:
        client.predict(typed, handle_file(str(image)), None, None, 0.5, api_name="/segment")
    message = str(caught.value)
    if typed.startswith(".."):
        assert "invalid Hub repo id" in message
    else:  # asked of the Hub (offline here), never read from the folder of that name
        assert f"Hub repo {typed}" in message and "not in the Hub cache" in message


def test_importing_the_app_parses_no_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import app` (a test runner, Gradio's reload) builds the page of the environment's
    settings and leaves the command line, and the process's pixel limit, alone."""
    import importlib

    from demo.settings import Settings

    for name in [n for n in os.environ if n.startswith(("BIOSEG_", "GRADIO_SERVER_"))]:
        monkeypatch.delenv(name)
    foreign = ["pytest", "--foo", "-x", "--weights", "someone/else", "--engine", "nonsense"]
    monkeypatch.setattr(sys, "argv", foreign)
    monkeypatch.delitem(sys.modules, "app", raising=False)  # imported afresh, put back after
    limit = Image.MAX_IMAGE_PIXELS  # a library user's, set by trainers.data.readers
    app = importlib.import_module("app")
    assert app.MODELS.settings == Settings()
    assert "someone/else (Hub)" not in app.MODELS.catalogue.choices
    assert limit == Image.MAX_IMAGE_PIXELS  # the server's pixel limit is main()'s to set
    assert type(app.demo).__name__ == "Blocks" and sys.argv == foreign


def test_the_command_line_adds_to_the_environment_s_settings() -> None:
    from demo.settings import Settings, parse_flags

    base = Settings(weights=("owner/env",))
    settings, host, port = parse_flags(
        ["--weights", "owner/flag", "--port", "8000", "--engine", "eager"], base, environ={}
    )
    assert settings == Settings(weights=("owner/env", "owner/flag"), engine="eager")
    assert (host, port) == ("127.0.0.1", 8000)
    by_gradio = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7000"}
    assert parse_flags([], base, environ=by_gradio) == (base, "0.0.0.0", 7000)


def test_local_runs_are_listed_from_their_folder(tmp_path) -> None:
    from demo.catalogue import weight_choices

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.safetensors").write_bytes(b"")
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "a-volume-model").mkdir()  # for volumes, not offered for 2D images
    (tmp_path / "a-volume-model" / "model.safetensors").write_bytes(b"")
    (tmp_path / "a-volume-model" / "config.json").write_text('{"volume": {"spatial_dims": 3}}')
    choices = weight_choices(REPO / "weights", tmp_path, ("someone/model",))
    assert choices["mine (run)"] == str(tmp_path / "mine")
    assert not any("a-volume-model" in label for label in choices)
    assert choices["drive-unet (bundled)"].endswith("weights/drive-unet")
    assert choices["someone/model (Hub)"] == "someone/model"
    assert not any("no-weights" in label for label in choices)


def test_the_threshold_saved_with_a_model_is_offered(tmp_path, monkeypatch, models) -> None:
    import zoo

    model = zoo.create_model("unet", base_channels=4)
    zoo.save_pretrained(model, tmp_path / "run", threshold=0.3)
    monkeypatch.setitem(models.catalogue.choices, "tuned (run)", str(tmp_path / "run"))
    assert models.saved_threshold("tuned (run)") == pytest.approx(0.3)
    assert models.saved_threshold("drive-unet (bundled)") == pytest.approx(0.5)
    assert models.saved_threshold("not a model id") == 0.5  # Segment says why


def test_compare_opens_on_a_report_model_against_the_best_u_net_of_its_data_set(
    tmp_path, monkeypatch
) -> None:
    import json

    import zoo
    from demo.catalogue import example_rows, listed_models, report_comparisons

    choices = {"owner/name (Hub)": "owner/name"}  # Hub ids have no local figures: left out
    for name, model_name, options, dice in [
        ("nuclei-fcn8s", "fcn8s", {"fc_channels": 8}, 0.75),
        ("nuclei-unet", "unet", {"base_channels": 4}, 0.87),
        ("nuclei-unet8", "unet", {"base_channels": 8}, 0.80),
    ]:
        folder = tmp_path / name
        model = zoo.create_model(model_name, **options)
        zoo.save_pretrained(model, folder, dataset="dsb2018")
        (folder / "summary.json").write_text(json.dumps({"metrics": {"dice": {"mean": dice}}}))
        choices[f"{name} (bundled)"] = str(folder)
    listed = listed_models(choices)
    assert [m.label for m in listed] == [
        "nuclei-unet (bundled)",
        "nuclei-unet8 (bundled)",
        "nuclei-fcn8s (bundled)",
    ]
    pair = tmp_path / "examples" / "dsb2018"
    pair.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(pair / "cells.png")
    Image.new("L", (8, 8)).save(pair / "cells_mask.png")
    examples = example_rows(listed, choices, tmp_path / "examples")
    assert report_comparisons(examples, listed) == [
        ["nuclei-fcn8s (bundled)", "nuclei-unet (bundled)", str(pair / "cells.png"),
         str(pair / "cells_mask.png")]
    ]  # fmt: skip


def test_the_model_card_says_what_a_model_is_for_and_how_good_it_is(tmp_path, monkeypatch, models):
    import zoo

    entry = ("drive-unet (bundled): retinal vessels, colour fundus", "drive-unet (bundled)")
    assert entry in models.catalogue.entries  # the dropdown says the task; the value the name
    card = models.card_markdown("dsb2018-unet (bundled)")
    assert "Trained on 2018 Data Science Bowl" in card
    assert "Dice 0.869, IoU 0.797, HD95 18.7 px; pooled Dice 0.872" in card
    assert "1.9M parameters" in card and "Not for: brightfield images" in card
    zoo.save_pretrained(zoo.create_model("unet", base_channels=4), tmp_path / "anonymous")
    monkeypatch.setitem(models.catalogue.choices, "anonymous (run)", str(tmp_path / "anonymous"))
    assert "No card: its config.json does not say" in models.card_markdown("anonymous (run)")
    no_card = models.card_markdown("not a model id")
    assert no_card.startswith("No card: the model could not be loaded")


def test_a_drawing_becomes_a_full_size_mask_or_is_refused_with_a_message(tmp_path, editor):
    import gradio as gr

    from demo.overlays import CLASS_COLOURS
    from trainers.data.readers import read_mask

    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    loaded, source = editor.edit_target(str(image), None)
    assert loaded["background"].shape == (40, 60, 3) and source == str(image)
    layer = np.zeros((20, 30, 4), np.uint8)  # drawn at a display scale of 0.5
    layer[5:10, 10:20] = (*CLASS_COLOURS[0], 255)
    drawing = {"background": loaded["background"][::2, ::2], "layers": [layer]}
    mask_file, download = editor.drawing_to_mask(
        drawing, source, "drive-unet (bundled)", str(image), None
    )
    expected = np.zeros((40, 60), bool)
    expected[10:20, 20:40] = True
    np.testing.assert_array_equal(read_mask(mask_file), expected)  # ready as a training target
    assert download == mask_file and mask_file.endswith("scan_drawn_mask.png")
    empty = {"background": loaded["background"], "layers": []}
    empty_file, _ = editor.drawing_to_mask(empty, source, "drive-unet (bundled)", str(image), None)
    assert not read_mask(empty_file).any()  # an empty target, under the documented rules
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(other)
    with pytest.raises(gr.Error, match="made on another image"):
        editor.drawing_to_mask(drawing, source, "drive-unet (bundled)", str(other), None)
    skewed = {"background": np.zeros((40, 40, 3), np.uint8), "layers": []}
    with pytest.raises(gr.Error, match="40 x 40 pixels but the image is 60 x 40"):
        editor.drawing_to_mask(skewed, source, "drive-unet (bundled)", str(image), None)


def test_a_corrupted_or_huge_editor_payload_is_refused_like_an_upload(tmp_path, monkeypatch):
    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    from demo.editor import checked_editor

    editor = checked_editor(8192 * 8192, type="numpy", image_mode="RGBA")
    layer = tmp_path / "layer.png"
    Image.new("RGBA", (30, 20), (255, 0, 0, 255)).save(layer)
    payload = EditorData(background=None, layers=[FileData(path=str(layer))], composite=None)
    assert editor.preprocess(payload)["layers"][0].shape == (20, 30, 4)
    small = checked_editor(599, type="numpy", image_mode="RGBA")
    with pytest.raises(
        gr.Error, match="the drawing: 30 x 20 = 600 pixels exceeds the limit of 599"
    ):
        small.preprocess(payload)
    png_header(layer, 30, 20)  # a size, no pixel data
    with pytest.raises(gr.Error, match="the drawing: not a readable image"):
        editor.preprocess(payload)


def test_a_multi_class_drawing_gives_class_ids_by_brush_colour(
    tmp_path, monkeypatch, models, editor
) -> None:
    import zoo
    from demo.overlays import CLASS_COLOURS

    model = zoo.create_model("unet", num_classes=3, base_channels=4)  # background + 2 classes
    zoo.save_pretrained(model, tmp_path / "three", classes=["background", "a", "b"])
    monkeypatch.setitem(models.catalogue.choices, "three (run)", str(tmp_path / "three"))
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(image)
    layer = np.zeros((8, 10, 4), np.uint8)
    layer[1:3, 1:4] = (*CLASS_COLOURS[0], 255)
    layer[5:7, 6:9] = (*CLASS_COLOURS[1], 255)
    # A colour the model has no class for, (255, 60, 200): the nearest class colour is class 1's
    # (255, 200, 0), 244 away, not class 2's (0, 200, 255), 296 away.
    layer[0, 9] = (*CLASS_COLOURS[2], 255)
    drawing = {"background": np.zeros((8, 10, 3), np.uint8), "layers": [layer]}
    mask_file, _ = editor.drawing_to_mask(drawing, str(image), "three (run)", str(image), None)
    labels = np.asarray(Image.open(mask_file))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[1:3, 1:4] == 1).all() and (labels[5:7, 6:9] == 2).all()
    assert labels[0, 9] == 1


def test_a_visitor_s_kept_prediction_is_compact_and_redraws_the_same_mask(segmenter) -> None:
    image = np.random.default_rng(0).random((64, 48, 3), dtype=np.float32)
    kept, message = segmenter.run_model("drive-unet (bundled)", Decoded(image), "scan", None)
    assert message == "" and kept.rgb.dtype == np.uint8 and kept.rgb.shape == (64, 48, 3)
    assert kept.probabilities.dtype == np.float16 and kept.probabilities.shape == (1, 64, 48)
    views = []
    for threshold in (0.3, 0.6):
        views.append(render(kept, threshold))
        expected = (kept.probabilities[0] > threshold) * 255
        np.testing.assert_array_equal(np.asarray(Image.open(views[-1]["mask"])), expected)
    (first_image, first_prediction), (image, prediction) = (v["slider"] for v in views)
    assert image == first_image  # the image view is written once per prediction
    assert prediction != first_prediction and Path(first_prediction).is_file()  # redrawn apart


def test_a_model_without_class_names_gets_one_name_per_class() -> None:
    import zoo

    model = zoo.create_model("unet", num_classes=4, base_channels=4)
    assert class_names(model) == ["background", "class 1", "class 2", "class 3"]
    model.pretrained_config = {"classes": ["bg", "nucleus"]}
    assert class_names(model) == ["bg", "nucleus"]


def test_a_1x1_image_gets_a_1x1_mask(client, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tiny)
    assert np.asarray(Image.open(segment(client, None, file=tiny)[5])).shape == (1, 1)


def test_answers_go_to_fresh_folders_and_old_ones_are_pruned(tmp_path, segmenter) -> None:
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / "stale-answer"
    stale.mkdir()
    (stale / "prediction.png").write_bytes(b"old")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    (tmp_path / "out" / "deleted-meanwhile").symlink_to(tmp_path / "gone")  # listed, then gone
    first, second = answer_folder("scan", tmp_path / "out"), answer_folder("scan", tmp_path / "out")
    assert not stale.exists()  # older than an hour: deleted; another request's race: ignored
    assert first != second and {first.parent, second.parent} == {tmp_path / "out"}
    odd = tmp_path / "..a scan;rm -rf.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(odd)
    assert segmenter.read_inputs(None, str(odd))[1] == "a_scan_rm_-rf"  # a label, never a path


@browser_test
def test_browser_shows_target_prediction_and_metrics(app_url, drive_pair, tmp_path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url, wait_until="load", timeout=120_000)
        page.get_by_text("01_test_mask.png").first.click(timeout=60_000)  # the DRIVE pair
        page.get_by_text("true positive").wait_for(timeout=180_000)
        table = page.locator("#metrics table", has_text="vessel").first
        table.wait_for(timeout=60_000)
        assert "dice" in table.inner_text()
        views = {  # the views the app drew, by the file names it gives them
            name: page.locator(f"img[src$='/{name}.png']").first
            for name in ("target", "prediction", "errors")
        }
        boxes = {name: view.bounding_box(timeout=30_000) for name, view in views.items()}
        target, prediction = boxes["target"], boxes["prediction"]
        assert target["x"] + target["width"] <= prediction["x"]  # side by side, target left
        assert abs(target["y"] - prediction["y"]) < 50 and boxes["errors"]["width"] > 100
        page.screenshot(path=tmp_path / "demo.png", full_page=True)
        browser.close()
    # The error map is on the page: thousands of its true-positive green and false-negative blue.
    assert pixels_near(tmp_path / "demo.png", TP) > 500
    assert pixels_near(tmp_path / "demo.png", FN) > 100


@browser_test
def test_browser_dicom_and_ome_tiff_show_hd95_in_physical_units(
    app_url, examples: Path, medical_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from tests.test_medical import PATIENT

    playwright = pytest.importorskip("playwright.sync_api")
    scan, ome, mask = medical_files
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        shown = [  # what each upload's note must say: the window, the plane, the pixel size
            (scan, 0, ["window centre 40, width 400", "pixel 0.5 x 0.5 mm", "HD95 in mm:"]),
            (ome, 2, ["plane 2 of 3 (Z stack)", "pixel 0.2 x 0.2 µm", "HD95 in µm:"]),
        ]
        for upload, plane, expected in shown:
            page.goto(app_url, wait_until="load", timeout=120_000)
            for box, path in (("#image-file", upload), ("#mask-file", mask)):
                with page.expect_file_chooser() as chooser:
                    page.locator(box).get_by_label("Click to upload or drop files").click()
                chooser.value.set_files(str(path))
                page.locator(box).get_by_text(path.name.split(".")[0]).wait_for(timeout=30_000)
            page.locator("#frame input").fill(str(plane))
            page.get_by_role("button", name="Segment", exact=True).click()
            note = page.locator("#note")
            note.get_by_text(expected[-1]).wait_for(timeout=120_000)
            assert all(text in note.inner_text() for text in expected), note.inner_text()
        page.screenshot(path=tmp_path / "medical.png", full_page=True)
        content = page.content()
        browser.close()
    assert PATIENT.split("^")[0] not in content
    assert PATIENT.split("^")[0] not in (examples.parent / "app.log").read_text()


def dice_shown(page, timeout: float = 60) -> float:
    """The Dice of the Segment tab's metrics table (its `nucleus` row), once it is filled."""
    deadline = time.monotonic() + timeout
    while "nucleus" not in (text := page.locator("#metrics").inner_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the metrics table stayed empty: {text!r}")
        time.sleep(0.5)
    return float(text.split("nucleus", 1)[1].split()[0])


def paint_stripes(page) -> None:
    """Paint three horizontal strokes across the middle of the Segment tab's image, and use the
    drawing as its target."""
    page.get_by_text("Paint the target, or correct the prediction").click()
    page.get_by_role("button", name="Load the image").click()
    page.get_by_role("button", name="Brush", exact=True).click(timeout=60_000)
    canvas = page.locator("canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 80, box["y"] + box["height"] / 2
    for dy in (-30, 0, 30):
        page.mouse.move(x, y + dy)
        page.mouse.down()
        for step in (1, 2):  # each move redraws the canvas: a stroke of few points is quick
            page.mouse.move(x + 80 * step, y + dy)
        page.mouse.up()
    page.get_by_role("button", name="Use the drawing as the target").click()


@browser_test
def test_browser_dsb_example_then_a_painted_target(app_url, tmp_path) -> None:
    with app_page(app_url) as page:
        page.get_by_text("fluorescence-98a46348_mask.png").first.click(timeout=60_000)
        page.get_by_text("true positive").wait_for(timeout=180_000)
        for name in ("target", "prediction", "errors"):
            page.locator(f"img[src$='/{name}.png']").first.wait_for(timeout=60_000)
        example_dice = dice_shown(page)
        assert abs(example_dice - 0.869) <= 0.1  # the nuclei model's test mean (its card)
        page.screenshot(path=tmp_path / "example.png", full_page=True)

        paint_stripes(page)
        deadline = time.monotonic() + 120
        while dice_shown(page) == example_dice and time.monotonic() < deadline:
            time.sleep(0.5)
        assert dice_shown(page) < 0.5  # three stripes are not the nuclei: metrics follow them
        drawn = page.locator("[aria-label='fluorescence-98a46348_drawn_mask.png']")
        drawn.last.wait_for(timeout=30_000)  # the mask offered for download, full size
        page.screenshot(path=tmp_path / "painted.png", full_page=True)
    # The stripes, now the target, are missed where no nucleus is: false negatives in blue.
    assert pixels_near(tmp_path / "painted.png", FN) > 200


@browser_test
def test_browser_the_2d_and_volume_examples_are_on_the_first_screen_at_1280x800(app_url) -> None:
    with app_page(app_url, 1280, 800) as page:
        for tab, example in ((None, "fluorescence-98a46348_mask.png"),
                             ("Volumes (CT, MRI)", "hippocampus_084_seg.nii.gz")):  # fmt: skip
            if tab:
                page.get_by_role("tab", name=tab).click()
            box = page.get_by_text(example).first.bounding_box(timeout=60_000)
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 800, box
            assert page.evaluate("window.scrollY") == 0  # seen before any scrolling


@browser_test
def test_browser_a_hippocampus_example_scrolled_turned_and_its_label_volume_taken_home(
    app_url, tmp_path: Path
) -> None:

    example = REPO / "examples" / "hippocampus" / "hippocampus_084.nii.gz"
    with app_page(app_url) as page:
        page.get_by_role("tab", name="Volumes (CT, MRI)").click()
        page.get_by_text("hippocampus_084_seg.nii.gz").first.click(timeout=60_000)
        deadline = time.monotonic() + 180
        while "Posterior" not in (text := page.locator("#volume-metrics").inner_text()):
            assert time.monotonic() < deadline, f"the table stayed empty: {text!r}"
            time.sleep(0.5)
        page.screenshot(path=tmp_path / "volume.png", full_page=True)
        cells = text.split("Anterior", 1)[1].split()
        assert float(cells[0]) == pytest.approx(0.857, abs=0.01)  # the card's figures
        shown = page.locator("#volume-prediction img")
        first = shown.get_attribute("src", timeout=60_000)
        number = page.locator("#volume-slice input[type='number']")
        start = int(number.input_value())
        number.fill(str(start + 3))
        number.press("Enter")
        wait_for_change(shown, first)
        moved = shown.get_attribute("src")
        page.get_by_label("sagittal").check()
        wait_for_change(shown, moved)
        index = int(number.input_value())  # the busiest sagittal slice, shown now
        view = page.request.get(urllib.parse.urljoin(app_url, shown.get_attribute("src")))
        (tmp_path / "view.png").write_bytes(view.body())
        link = page.locator("#volume-labels a[href*='_seg.nii.gz']").first
        href = link.get_attribute("href", timeout=30_000)
        (tmp_path / "labels.nii.gz").write_bytes(
            page.request.get(urllib.parse.urljoin(app_url, href)).body()
        )
    written, given = nib.load(tmp_path / "labels.nii.gz"), nib.load(example)
    assert written.shape == given.shape
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-5)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    # The shown sagittal slice (canonical LPS; the example is stored RAS: x reversed) holds the
    # classes the view shows, in the same proportions (the view is resized by nearest only).
    plane = labels[labels.shape[0] - 1 - index]
    shown_fractions = class_fractions_in_view(tmp_path / "view.png")
    assert set(shown_fractions) == set(np.unique(plane)) - {0}
    for c, fraction in shown_fractions.items():
        assert fraction == pytest.approx((plane == c).mean(), abs=0.01)


def class_fractions_in_view(view: Path) -> dict[int, float]:
    """The fraction of a prediction view's pixels tinted by each class: a tint over grey keeps
    its colour's direction away from grey (the first two classes: gold, R > B; cyan, B > R)."""
    rgb = np.asarray(Image.open(view).convert("RGB"), dtype=np.float32)
    chroma = rgb - rgb.mean(axis=-1, keepdims=True)
    tinted = np.linalg.norm(chroma, axis=-1) > 40  # half a class colour's chroma is about 95
    gold = tinted & (chroma[..., 0] > chroma[..., 2])
    found = {1: gold.mean(), 2: (tinted & ~gold).mean()}
    return {c: float(f) for c, f in found.items() if f > 0}


@pytest.mark.slow  # the CT's 20 slices through the 3D model's windows, and a NIfTI: about 1 min
@browser_test
@pytest.mark.skipif(not (SHARED_DATA / "CT-sample").is_dir(), reason="no CT sample in shared data")
def test_browser_a_zipped_ct_series_and_a_nifti_show_their_spacing_windows_and_a_warning(
    app_url, tmp_path: Path
) -> None:
    import zipfile

    series = tmp_path / "ct_series.zip"
    with zipfile.ZipFile(series, "w") as archive:
        for path in (SHARED_DATA / "CT-sample" / "example_ct_dicom").iterdir():
            archive.write(path, path.name)
    nifti = SHARED_DATA / "CT-sample" / "example_ct_sm.nii.gz"
    with app_page(app_url) as page:
        page.get_by_role("tab", name="Volumes (CT, MRI)").click()
        page.locator("#volume-file input[type='file']").set_input_files(str(series))
        page.get_by_role("button", name="Segment the volume").click()
        note = page.locator("#volume-note")
        note.get_by_text("0.98 x 0.98 x 2.00 mm").wait_for(timeout=240_000)  # the positions' 2 mm
        assert "CT" in note.inner_text() and "trained on MR" in note.inner_text()
        shown = page.locator("#volume-image img")  # drawn once the model has predicted:
        before = shown.get_attribute("src", timeout=240_000)  # 14-29 s here, >60 s in CI
        for preset in ("lung", "bone"):
            page.locator("#volume-window input").fill(preset)
            page.get_by_role("option", name=preset).click()
            wait_for_change(shown, before)
            before = shown.get_attribute("src")
        page.locator("#volume-file button[aria-label='Clear']").first.click()
        page.locator("#volume-file input[type='file']").set_input_files(str(nifti))
        page.get_by_role("button", name="Segment the volume").click()
        note.get_by_text("3.00 x 3.00 x 3.00 mm").wait_for(timeout=240_000)


def wait_for_change(image, before: str, timeout: float = 30) -> None:
    """Until the `img`'s source is no longer `before` (a view redrawn)."""
    deadline = time.monotonic() + timeout
    while image.get_attribute("src") == before:
        if time.monotonic() > deadline:
            raise AssertionError("the view was not redrawn")
        time.sleep(0.2)


def pixels_near(screenshot: Path, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels of a screenshot are within `tolerance` of `colour` in every channel."""
    rgb = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - np.array(colour)) <= tolerance).all(axis=-1).sum())


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.slow
def test_load_16_clients_by_10_requests_all_answered(app_url: str, tmp_path: Path) -> None:
    """16 concurrent clients x 10 requests, bounded in count and time, on localhost only."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    image = tmp_path / "visitor.png"  # every visitor sends the same image, as when they all
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(image)  # click one example: identical outputs at the same time

    def client_session(_: int) -> list[tuple[float, bytes]]:
        client = Client(app_url, verbose=False)
        answers = []
        for _ in range(10):
            start = time.perf_counter()
            result = client.predict(
                "drive-unet (bundled)", handle_file(str(image)), None, None, 0.5,
                api_name="/segment",
            )  # fmt: skip
            seconds = time.perf_counter() - start
            for view in (result[1], *result[3], result[5]):  # prediction, slider, mask: whole
                assert np.asarray(Image.open(view)).shape[:2] == (128, 128)
            answers.append((seconds, np.asarray(Image.open(result[5])).tobytes()))
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        sessions = list(pool.map(client_session, range(16), timeout=900))
    wall = time.perf_counter() - started
    answers = [answer for session in sessions for answer in session]
    latencies = np.sort([seconds for seconds, _ in answers])
    # The same image from 16 clients at once: one mask for all 160, no request crossed another's.
    assert len({mask for _, mask in answers}) == 1 and len(answers) == 160
    peak = peak_rss_mb(SERVER_PIDS[app_url])
    print(
        f"\nload: 160 requests in {wall:.1f} s, p50 {np.percentile(latencies, 50):.2f} s, "
        f"p95 {np.percentile(latencies, 95):.2f} s, server peak RSS {peak:.0f} MB"
    )
    assert peak < 4096  # bounded: the queue holds requests, not 160 images in flight


FIRST_ANSWERS_AT_ONCE = """
import gc, threading
from concurrent.futures import ThreadPoolExecutor
from demo import views

barrier = threading.Barrier(16)


def first(_):
    barrier.wait()  # sixteen first requests at the same moment, as in the load test
    return views.output_dir()


with ThreadPoolExecutor(16) as pool:
    folders = set(pool.map(first, range(16)))
gc.collect()
print(len(folders), all(folder.is_dir() for folder in folders))
"""


def test_first_answers_at_once_share_one_output_folder_that_stays(run_python) -> None:
    """A found race: each made its own folder, and those not kept were deleted mid-answer."""
    assert run_python(FIRST_ANSWERS_AT_ONCE).stdout.split() == ["1", "True"]


@contextlib.contextmanager
def app_page(app_url: str, width: int = 1400, height: int = 1100) -> Iterator:
    """A page of the app in headless Chromium, closed with its browser afterwards."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(app_url, wait_until="load", timeout=120_000)
        try:
            yield page
        finally:
            browser.close()


@browser_test
def test_browser_counts_a_dsb_example_and_its_label_image_holds_that_many_ids(
    app_url, tmp_path: Path
) -> None:
    with app_page(app_url) as page:
        page.get_by_text("histology-a08166d9_mask.png").first.click(timeout=60_000)
        count = page.locator("#count")
        count.get_by_text("target: 22").wait_for(timeout=180_000)  # the example's 22 nuclei
        found = int(re.match(r"(\d+) nucle", count.inner_text()).group(1))
        link = page.locator("#object-files a[href*='_labels.png']").first
        href = link.get_attribute("href", timeout=30_000)
        response = page.request.get(urllib.parse.urljoin(app_url, href))
        (tmp_path / "labels.png").write_bytes(response.body())
        table = page.locator("#object-files a[href*='_objects.csv']").first
        response = page.request.get(urllib.parse.urljoin(app_url, table.get_attribute("href")))
        rows = response.text().strip().splitlines()[1:]
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    assert labels.dtype == np.uint16 and labels.shape == (256, 320)
    assert len(np.unique(labels[labels > 0])) == found > 0 and len(rows) == found


@browser_test
def test_browser_a_visitor_s_work_outlives_others_sweeps_and_stays_theirs(
    app_url, examples: Path
) -> None:
    """Visitor A keeps two pairs and fine-tunes; every folder and file under the app's output
    folder is set two hours back; visitor B, in another browser context, runs Segment (whose
    sweep of old answers deleted A's session before: its folder lay among the answers); A's
    pairs and model are still there, A still segments with the model, and B can neither see
    it in the menu nor reach it by its token."""
    from gradio_client import Client, handle_file

    with app_page(app_url) as page:
        page.get_by_text("histology-a08166d9_mask.png").first.click(timeout=60_000)
        page.locator("#count").get_by_text("target: 22").wait_for(timeout=180_000)
        paint_stripes(page)
        drawn = page.locator("[aria-label='histology-a08166d9_drawn_mask.png']")
        drawn.last.wait_for(timeout=60_000)  # the painted target is the Segment tab's mask
        page.get_by_role("tab", name="Teach it your images").click()
        keep = page.get_by_role("button", name="Keep the Segment tab's image and target")
        for count in ("1 pair kept.", "2 pairs kept."):
            keep.click()
            page.locator("#kept-note").get_by_text(count).wait_for(timeout=60_000)
        page.get_by_role("button", name="Fine-tune the chosen model on the kept pairs").click()
        done = page.locator("#finetuned")
        done.get_by_text("is ready in the model menus").wait_for(timeout=240_000)
        assert "+ 2 of your images" in done.inner_text()
        href = page.locator("a[href*='yours-']").first.get_attribute("href", timeout=30_000)
        token = re.search(r"(yours-[0-9a-f]+)\.zip", href).group(1)
        [session] = (examples.parent / "tmp").glob("bioseg-app-*/sessions/session-*")
        two_hours_ago = time.time() - 7200
        for path in (examples.parent / "tmp").glob("bioseg-app-*/**/*"):
            os.utime(path, (two_hours_ago, two_hours_ago))

        other = page.context.browser.new_context().new_page()  # visitor B
        other.goto(app_url, wait_until="load", timeout=120_000)
        other.get_by_text("fluorescence-98a46348_mask.png").first.click(timeout=60_000)
        other.get_by_text("true positive").wait_for(timeout=180_000)  # B's Segment answered
        assert len(list((session / "pairs" / "masks").glob("*.png"))) == 2
        assert (session / "models" / token / "model.safetensors").is_file()
        menu = other.get_by_label("Model (or type a Hub id OWNER/NAME)").first
        menu.click()
        other.get_by_role("option").first.wait_for(timeout=30_000)
        options = other.get_by_role("option").all_inner_texts()
        assert options and not any("of your image" in text for text in options)

        page.get_by_role("tab", name="Segment").click()
        chosen = page.get_by_label("Model (or type a Hub id OWNER/NAME)").first
        assert "+ 2 of your images" in chosen.input_value()
        view = page.locator("img[src$='/prediction.png']").first
        before = view.get_attribute("src", timeout=30_000)
        page.get_by_role("button", name="Segment", exact=True).click()  # the fine-tuned model
        deadline = time.monotonic() + 180
        while view.get_attribute("src") == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert view.get_attribute("src") != before  # a new prediction was drawn
        assert page.get_by_text("Could not load model").count() == 0
    image = examples / "dsb2018" / "histology-a08166d9.png"
    with pytest.raises(Exception, match="invalid Hub repo id 'yours-"):  # B by the token
        Client(app_url, verbose=False).predict(
            token, None, handle_file(str(image)), None, 0.5, api_name="/segment"
        )
