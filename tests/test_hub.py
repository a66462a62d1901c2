"""Saving, loading and publishing models: local folders, and the Hub through a local fake Hub.

The Hub client runs in a fresh interpreter (huggingface_hub reads HF_ENDPOINT, HF_HOME and
HF_HUB_OFFLINE when imported) against `hub_server.FakeHub` on 127.0.0.1: nothing leaves the
machine.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hub_server import FakeHub
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import zoo
from tests.conftest import REPO, free_port
from trainers.hub import push
from trainers.hub.model_card import run_card

TINY = "timm/mobilenetv3_large_100"
TINY_KWARGS = {"decoder_channels": (16, 16, 16, 16, 16)}
REPO_ID = "owner/drive-unet"
SUMMARY = {
    "split": "test",
    "n_images": 20,
    "threshold": 0.5,
    "metrics": {
        "dice": {"mean": 0.8, "std": 0.05, "n": 20, "excluded": 0},
        "iou": {"mean": 0.67, "std": 0.06, "n": 20, "excluded": 0},
        "hd95": {"mean": 12.5, "std": 4.0, "n": 18, "excluded": 2},
        "precision": {"mean": 0.82, "std": 0.04, "n": 20, "excluded": 0},
        "recall": {"mean": 0.78, "std": 0.07, "n": 20, "excluded": 0},
    },
    "average_precision": 0.88,
    "best_threshold": 0.45,
    "auc": 0.97,
}
ROUND_TRIP = """
import torch, zoo
from safetensors.torch import load_file
from trainers.hub.push import main

reference = load_file({reference!r})
for repo_id in {push_to!r}:
    assert main([{run!r}, repo_id]) == 0
for repo_id in {load!r}:
    model = zoo.from_pretrained(repo_id)
    with torch.no_grad():
        torch.testing.assert_close(model(reference["x"]), reference["y"], rtol=0, atol=1e-6)
    assert not model.training and model.pretrained_config["threshold"] == 0.5
for repo_id in {missing!r}:
    try:
        zoo.from_pretrained(repo_id)
    except zoo.PretrainedWeightsError as error:
        print("NOT FOUND:", error)
"""


def tiny_model(num_classes: int = 1) -> zoo.SegmentationModel:
    """A small model with non-default batch-norm statistics, so unloaded buffers would show."""
    torch.manual_seed(0)
    model = zoo.create_model(TINY, num_classes=num_classes, **TINY_KWARGS)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder as the trainer and evaluator write it; reference.safetensors beside it."""
    run = tmp_path / "run"
    model = tiny_model()
    extra = {"input_size": [64, 64], "threshold": 0.5, "classes": ["background", "vessel"]}
    zoo.save_pretrained(model, run, **extra, dataset="drive")
    settings = {"model": TINY, "epochs": 2, "lr": 0.001, "model_kwargs": TINY_KWARGS}
    (run / "train_config.json").write_text(json.dumps(settings))
    (run / "metrics.csv").write_text(
        "epoch,train_loss,val_dice,val_iou\n1,0.9,0.5,0.4\n2,0.7,0.6,0.45\n"
    )
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(json.dumps(SUMMARY))
    Image.new("RGB", (8, 8), "white").save(run / "eval" / "pr_curve.png")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    save_file({"x": x, "y": output(model, x)}, tmp_path / "reference.safetensors")
    return run


def client_env(hub_url: str, home: Path, offline: bool = False) -> dict[str, str]:
    """The Hub client's environment: the fake Hub, a fake token, a private cache."""
    return {
        "HF_ENDPOINT": hub_url,
        "HF_TOKEN": "fake",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def test_weights_go_up_by_lfs_as_the_hub_takes_large_files(run_dir, tmp_path, run_python):
    """The Hub stores weights in LFS: with a client that does not use hf_xet, the weights go up
    by the LFS batch API and a PUT of their bytes, the commit names them by sha256, and they
    come back whole."""
    paths = {"reference": str(tmp_path / "reference.safetensors"), "run": str(run_dir)}
    with FakeHub(token="fake", lfs=True) as hub:
        code = ROUND_TRIP.format(**paths, push_to=[REPO_ID], load=[REPO_ID], missing=[])
        env = {**client_env(hub.url, tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1"}
        run_python(code, env=env)
    weights = (run_dir / "model.safetensors").read_bytes()
    oid = hashlib.sha256(weights).hexdigest()
    assert f"POST /{REPO_ID}.git/info/lfs/objects/batch" in hub.requests
    assert f"PUT /lfs-objects/{oid}" in hub.requests and hub.unhandled == []
    assert set(hub.lfs_objects) == {oid}  # the weights alone: the small files go inline
    assert hub.repos[REPO_ID].files["model.safetensors"] == weights


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_push_then_load_from_hub_and_offline_cache(run_dir, tmp_path, run_python):
    home = tmp_path / "hf_home"
    paths = {"reference": str(tmp_path / "reference.safetensors"), "run": str(run_dir)}
    with FakeHub(token="fake") as hub:
        url = hub.url
        code = ROUND_TRIP.format(
            **paths, push_to=[REPO_ID] * 2, load=[REPO_ID], missing=["owner/never-pushed"]
        )
        result = run_python(code, env=client_env(url, home))
    assert result.stdout.startswith(f"{url}/{REPO_ID}\n")  # the CLI prints the repo URL
    assert "NOT FOUND: could not get config.json of Hub repo owner/never-pushed" in result.stdout
    assert "check the repo id" in result.stdout
    assert hub.unhandled == []
    assert "HEAD /owner/drive-unet/resolve/main/model.safetensors" in hub.requests
    repo = hub.repos[REPO_ID]
    assert repo.summaries == ["Upload bioseg model"] * 2  # each push is one commit (2nd: exist_ok)
    expected = {"model.safetensors", "config.json", "README.md", "pr_curve.png", "summary.json"}
    assert set(repo.files) == expected and not repo.private
    assert repo.files["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    card = repo.files["README.md"].decode()
    assert card == run_card(run_dir, REPO_ID)
    metadata = front_matter(card)
    assert metadata["library_name"] == "bioseg" and metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["tags"] == ["image-segmentation", "medical-imaging", "bioseg", "timm"]
    assert metadata["datasets"] == ["drive"]
    scores = ["average_precision", "auc"]
    assert metadata["metrics"] == ["dice", "iou", "hd95", "precision", "recall", *scores]
    assert "| Dice | 0.8000 ± 0.0500 | 20 | 0 |" in card
    assert "| HD95 (px) | 12.5000 ± 4.0000 | 18 | 2 |" in card
    assert "| ROC AUC | 0.9700 |" in card

    # The server is gone: the cached snapshot is used, with HF_HUB_OFFLINE=1 or without network.
    # (An uncached repo is only tried offline: without network the client retries for ~25 s.)
    for offline in (True, False):
        missing = ["owner/never-pushed"] if offline else []
        code = ROUND_TRIP.format(**paths, push_to=[], load=[REPO_ID], missing=missing)
        result = run_python(code, env=client_env(url, home, offline=offline))
        assert ("NOT FOUND: could not get config.json" in result.stdout) == offline
        assert ("it is not in the Hub cache" in result.stdout) == offline


def test_save_and_load_local_folder(tmp_path):
    model = tiny_model()
    folder = zoo.save_pretrained(model, tmp_path / "saved", threshold=0.3, classes=["bg", "fg"])
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]  # no temp files
    x = torch.rand(2, 3, 64, 64)
    for source in (folder, str(folder)):
        loaded = zoo.from_pretrained(source)
        torch.testing.assert_close(output(loaded, x), output(model, x), rtol=0, atol=0)
        assert loaded.config() == {**model.config(), "model_kwargs": {"decoder_channels": [16] * 5}}
        assert loaded.pretrained_config["threshold"] == 0.3
        assert loaded.pretrained_config["bioseg_version"]


def test_save_refuses_to_override_model_keys(tmp_path):
    with pytest.raises(ValueError, match="cannot override num_classes"):
        zoo.save_pretrained(tiny_model(), tmp_path, num_classes=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file_is_named(tmp_path, name):
    zoo.save_pretrained(tiny_model(), tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"has no {name}"):
        zoo.from_pretrained(tmp_path)


def test_weights_for_another_class_count_are_refused(tmp_path):
    zoo.save_pretrained(tiny_model(num_classes=2), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_classes": 3}))
    with pytest.raises(ValueError, match="num_classes=3") as error:
        zoo.from_pretrained(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(error.value)
    assert "net.head.weight (file [2, 16, 3, 3], model [3, 16, 3, 3])" in str(error.value)


def test_non_finite_weights_are_refused(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.net.head.bias.fill_(float("nan"))
    zoo.save_pretrained(model, tmp_path)
    with pytest.raises(ValueError, match=r"NaN or infinite values in net\.head\.bias") as error:
        zoo.from_pretrained(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(error.value)


def test_only_safetensors_are_read(tmp_path):
    zoo.save_pretrained(tiny_model(), tmp_path)
    torch.save(tiny_model().state_dict(), tmp_path / "model.safetensors")  # a pickle
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        zoo.from_pretrained(tmp_path)


def test_config_without_required_keys(tmp_path):
    zoo.save_pretrained(tiny_model(), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": TINY, "num_classes": 1}))
    with pytest.raises(ValueError, match="lacks in_channels, model_kwargs"):
        zoo.from_pretrained(tmp_path)


def test_revision_is_for_hub_repos_only(tmp_path):
    zoo.save_pretrained(tiny_model(), tmp_path)
    with pytest.raises(ValueError, match="applies to Hub repos"):
        zoo.from_pretrained(tmp_path, revision="v1")


HUB_ONLY = """
import zoo
print(zoo.from_pretrained("lab/model").num_classes)  # a folder: read by default
for repo in ("lab/model", "../lab/model"):
    try:
        zoo.from_pretrained(repo, hub_only=True)
    except (ValueError, zoo.PretrainedWeightsError) as error:
        print(f"{type(error).__name__}: {error}")
"""


def test_hub_only_never_reads_a_local_folder_of_that_name(tmp_path, run_python):
    zoo.save_pretrained(tiny_model(), tmp_path / "lab" / "model")
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    lines = run_python(HUB_ONLY, cwd=tmp_path, env=offline).stdout.splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("PretrainedWeightsError: could not get config.json of Hub repo")
    assert "not in the Hub cache" in lines[1]
    assert lines[2].startswith("ValueError: invalid Hub repo id '../lab/model'")


@pytest.mark.parametrize("bad", ["../x", "owner/../x", "owner/a..b", "a/b/c", "owner/na me", "x"])
def test_invalid_repo_ids(bad):
    with pytest.raises(ValueError, match="neither an existing folder nor a Hub repo id"):
        zoo.from_pretrained(bad)


def test_model_card_leaves_out_absent_sections(tmp_path):
    zoo.save_pretrained(tiny_model(), tmp_path)
    card = run_card(tmp_path, "owner/bare")
    assert set(front_matter(card)) == {"library_name", "tags", "pipeline_tag"}
    assert 'zoo.from_pretrained("owner/bare")' in card
    assert "mask = probabilities[:, 0] > 0.5" in card
    for absent in ("## Training", "## Evaluation", "## Data set", "![", "threshold |", "None"):
        assert absent not in card


def test_model_card_of_a_full_run(run_dir):
    (run_dir / "eval" / "grid.png").write_bytes((run_dir / "eval" / "pr_curve.png").read_bytes())
    card = run_card(run_dir, REPO_ID)
    assert "| `lr` | 0.001 |" in card and "| `model_kwargs` | {" in card
    assert "Best validation Dice at epoch 2 of 2: val_dice 0.6, val_iou 0.45." in card
    assert "| classes | background, vessel |" in card
    assert "trained at 64 x 64 pixels" in card
    assert "![PR curve](pr_curve.png)" in card
    assert "Staal J. et al." in card
    # DRIVE's terms forbid redistributing its images: the grid of test images is withheld.
    assert "![grid]" not in card and "DRIVE's terms forbid copying" in card


def test_the_card_states_the_licence_the_run_was_trained_with(run_dir):
    assert "license:" not in run_card(run_dir, REPO_ID)  # none given: none claimed
    settings = json.loads((run_dir / "train_config.json").read_text())
    (run_dir / "train_config.json").write_text(json.dumps({**settings, "license": "cc-by-4.0"}))
    front_matter = run_card(run_dir, REPO_ID).split("---")[1]
    assert "license: cc-by-4.0" in front_matter


def set_dataset(run_dir: Path, dataset: str) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "dataset": dataset}))


@pytest.mark.parametrize(
    ("dataset", "grid"), [("drive", False), ("isbi2012", False), ("dsb2018", True)]
)
def test_the_grid_of_test_images_is_published_only_where_the_terms_allow(
    run_dir, tmp_path, dataset, grid
):
    from trainers.hub.push import export_run

    (run_dir / "eval" / "grid.png").write_bytes((run_dir / "eval" / "pr_curve.png").read_bytes())
    set_dataset(run_dir, dataset)
    folder = export_run(run_dir, f"my-lab/{dataset}", tmp_path / "bundle")
    assert (folder / "grid.png").is_file() is grid
    assert ("![grid](grid.png)" in (folder / "README.md").read_text()) is grid


def test_half_precision_export_halves_the_file_and_loads_as_float32(run_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from trainers.hub.push import export_run

    monkeypatch.setattr(push, "HALF_MIN_ELEMENTS", 2000)  # the tiny model's large tensors
    folder = export_run(run_dir, "my-lab/drive-unet", tmp_path / "half", half=True)
    stored, full_state = (load_file(f / "model.safetensors") for f in (folder, run_dir))
    for key, value in stored.items():
        large = full_state[key].is_floating_point() and full_state[key].numel() >= 2000
        assert value.dtype == (torch.float16 if large else full_state[key].dtype), key
    size, full_size = ((f / "model.safetensors").stat().st_size for f in (folder, run_dir))
    assert size < 0.6 * full_size
    full, half = zoo.from_pretrained(run_dir), zoo.from_pretrained(folder)
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    reference = load_file(tmp_path / "reference.safetensors")
    assert torch.allclose(output(half, reference["x"]), output(full, reference["x"]), atol=1e-3)


def test_half_precision_refuses_weights_beyond_the_float16_range(tmp_path):
    from trainers.hub.push import half_precision

    save_file({"big": torch.tensor([1e6]), "ok": torch.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="big exceed the float16 range"):
        half_precision(tmp_path / "w.safetensors", min_elements=1)


def test_cli_reports_bad_input_in_one_line(run_dir, tmp_path, capsys, monkeypatch):
    cases = [
        ([str(tmp_path / "missing"), REPO_ID], "does not exist"),
        ([str(run_dir), "../x"], "invalid Hub repo id '../x'"),
        ([str(tmp_path), REPO_ID], "has no config.json"),
    ]
    monkeypatch.setattr(push, "get_token", lambda: None)  # and no --token: fails before the Hub
    cases.append(([str(run_dir), REPO_ID], "no Hugging Face token"))
    for argv, message in cases:
        assert push.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_export_writes_the_upload_into_a_new_folder(run_dir, tmp_path):
    from trainers.hub.push import export_run

    folder = export_run(run_dir, "my-lab/drive-unet", tmp_path / "bundle")
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "model.safetensors",
        "pr_curve.png",
        "summary.json",
    ]
    assert (folder / "model.safetensors").read_bytes() == (
        run_dir / "model.safetensors"
    ).read_bytes()
    assert "my-lab/drive-unet" in (folder / "README.md").read_text()
    model = zoo.from_pretrained(folder)
    assert model.pretrained_config["classes"] == ["background", "vessel"]
    with pytest.raises(FileExistsError, match="already exists"):  # nothing is overwritten
        export_run(run_dir, "my-lab/drive-unet", folder)


def test_model_card_says_how_a_grey_model_normalizes(tmp_path):
    grey = zoo.create_model("unet", in_channels=1, base_channels=4)
    zoo.save_pretrained(grey, tmp_path / "grey")
    zoo.save_pretrained(tiny_model(), tmp_path / "rgb")
    note = "with the averages of these values (one grey channel)"
    assert note in run_card(tmp_path / "grey", "owner/grey")
    assert note not in run_card(tmp_path / "rgb", "owner/rgb")


def test_a_config_of_a_huge_model_is_refused_before_its_weights(tmp_path):
    zoo.save_pretrained(zoo.create_model("unet", base_channels=4), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_kwargs"] = {"base_channels": 4096}  # 127 billion parameters
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"never read")
    with pytest.raises(ValueError, match=r"model of 127,071,563,777 parameters, over the limit"):
        zoo.from_pretrained(tmp_path, max_parameters=400_000_000)


@pytest.mark.parametrize(
    "folder",
    sorted(p.parent for p in (REPO / "weights").glob("*/model.safetensors")),
    ids=lambda folder: folder.name,
)
def test_bundled_weights_fit_a_space_and_load_as_float32(folder: Path) -> None:
    assert (folder / "model.safetensors").stat().st_size <= 45_000_000  # a pushable Space
    model = zoo.from_pretrained(folder)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.pretrained_config["dataset"] in ("drive", "isbi2012", "dsb2018", "msd")


APP_CARD = """
import app
from trainers.hub.push import main

assert main([{run!r}, "owner/with-summary"]) == 0
print("WITH:", app.MODELS.card_markdown("owner/with-summary"))
"""


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_a_typed_hub_id_gets_the_card_of_its_config_and_summary(run_dir, tmp_path, run_python):
    with FakeHub(token="fake") as hub:
        result = run_python(APP_CARD.format(run=str(run_dir)), env=client_env(hub.url, tmp_path))
        (run_dir / "eval" / "summary.json").unlink()  # a repo published without test figures
        bare = APP_CARD.replace("with-summary", "without").format(run=str(run_dir))
        bare_result = run_python(bare, env=client_env(hub.url, tmp_path))
    card = result.stdout.split("WITH: ", 1)[1]
    assert "Trained on DRIVE" in card
    assert "Test (test split, 20 images, threshold 0.5), per image: Dice 0.800, IoU 0.670" in card
    bare_card = bare_result.stdout.split("WITH: ", 1)[1]
    assert "Trained on DRIVE" in bare_card
    assert "No test figures: no readable evaluation summary.json in its Hub repo" in bare_card


def test_the_mean_and_std_saved_with_weights_win_over_the_plugin_s_defaults(tmp_path):
    folder = zoo.save_pretrained(zoo.create_model("unet", base_channels=4), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config.update(mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.25])  # as trained, before a change
    (folder / "config.json").write_text(json.dumps(config))
    model = zoo.from_pretrained(folder)
    assert model.spec.mean == (0.1, 0.2, 0.3) and model.spec.std == (0.5, 0.5, 0.25)
    assert zoo.get_spec("unet").mean != model.spec.mean  # the registry itself is untouched
    assert model.config()["mean"] == [0.1, 0.2, 0.3]  # and a re-save keeps them
    config.update(std=[0.5, 0.0, 0.5])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: 'mean' and 'std' must be lists"):
        zoo.from_pretrained(folder)


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_push_with_a_space_makes_a_space_that_starts_from_its_own_files(
    run_dir, tmp_path, run_python
) -> None:
    """The Space round trip: push the model and its Space to the local Hub server, download the
    Space's files into a fresh folder, start its app there offline (the Hub cache pre-filled,
    as a Space's first start would fill it), and ask it for a prediction."""
    from gradio_client import handle_file

    space_id, home = "owner/drive-unet-demo", tmp_path / "hf_home"
    with FakeHub(token="fake") as hub:
        url = hub.url
        code = (
            "from huggingface_hub import hf_hub_download\nfrom trainers.push import main\n"
            f"assert main([{str(run_dir)!r}, {REPO_ID!r}, '--space', {space_id!r}]) == 0\n"
            f"for name in ('config.json', 'model.safetensors'):\n"
            f"    hf_hub_download({REPO_ID!r}, name)\n"
        )
        printed = run_python(code, env=client_env(hub.url, home)).stdout
        assert hub.unhandled == []
    assert f"space: {url}/spaces/{space_id}" in printed
    space = hub.repos[f"spaces/{space_id}"].files
    assert hub.variables[f"spaces/{space_id}"] == {"BIOSEG_WEIGHTS": REPO_ID}
    assert not any(name.endswith((".safetensors", ".onnx")) for name in space)  # no weights
    # Every module of this checkout that app.py imports is in the Space (demo/ was not: the app
    # found it here only through the editable install, and a real Space could not start).
    assert set(local_modules(REPO / "app.py")) <= set(space)
    readme = space["README.md"].decode()
    assert front_matter(readme)["sdk"] == "gradio" and front_matter(readme)["models"] == [REPO_ID]
    assert f"(https://huggingface.co/{REPO_ID})" in readme  # the Space links to the model
    card = hub.repos[REPO_ID].files["README.md"].decode()
    assert f"(https://huggingface.co/spaces/{space_id})" in card  # and the model to the Space
    folder = tmp_path / "space"
    for name, content in space.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)

    port = free_port()
    env = {
        **os.environ,
        **client_env("http://127.0.0.1:9", home, offline=True),  # no Hub: the cache only
        "BIOSEG_WEIGHTS": hub.variables[f"spaces/{space_id}"]["BIOSEG_WEIGHTS"],
        "BIOSEG_CACHE": str(tmp_path / "engines"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = tmp_path / "space.log"
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=folder,
                              env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        client = connect(f"http://127.0.0.1:{port}/", server, log)
        image = np.random.default_rng(0).random((64, 64, 3))
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "image.png")
        answer = client.predict(f"{REPO_ID} (Hub)", None, handle_file(str(tmp_path / "image.png")),
                                None, 0.5, api_name="/segment")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    model = zoo.from_pretrained(run_dir)
    pixels = torch.from_numpy(np.asarray(Image.open(tmp_path / "image.png"), np.float32) / 255)
    expected = model.predict(pixels.permute(2, 0, 1)[None])[0, 0].numpy() > 0.5
    predicted = np.asarray(Image.open(answer[5])) > 0
    assert (predicted != expected).sum() <= 5  # the Space's engine against eager PyTorch


def local_modules(script: Path) -> list[str]:
    """The files of this checkout that `script` imports, directly or through them (imports
    inside functions counted), relative to the checkout: 'demo/views.py', 'zoo/__init__.py'."""
    found, todo = set(), [script]
    while todo:
        tree = ast.parse(todo.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                for end in range(1, len(parts) + 1):
                    base = REPO.joinpath(*parts[:end])
                    for path in (base / "__init__.py", base.with_suffix(".py")):
                        relative = path.relative_to(REPO).as_posix()
                        if path.is_file() and relative not in found:
                            found.add(relative)
                            todo.append(path)
    return sorted(found)


def connect(url: str, server: subprocess.Popen, log: Path):
    """A gradio_client on `url` once the app answers (it fails the test if the app exits)."""
    from gradio_client import Client

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            return Client(url, verbose=False)
        except Exception:  # not up yet
            if server.poll() is not None:
                pytest.fail(f"the Space's app exited:\n{log.read_text()}")
            time.sleep(0.5)
    pytest.fail(f"the Space's app did not start within 180 s:\n{log.read_text()}")


def test_the_card_says_at_what_resolution_a_scaled_model_runs(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert "| resolution |" not in run_card(run_dir, REPO_ID)
    (run_dir / "config.json").write_text(json.dumps({**config, "scale": 0.5}))
    assert "| resolution | run at 0.5 of the image's size" in run_card(run_dir, REPO_ID)
