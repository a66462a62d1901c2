"""Publish a training run folder to the Hugging Face Hub, in one commit.

    python -m trainers.push runs/drive-unet my-lab/drive-unet [--private] [--token T]
    python -m trainers.push runs/drive-unet my-lab/drive-unet --export weights/drive-unet
    python -m trainers.push runs/dsb2018-fcn8s my-lab/dsb2018-fcn8s --half  # large tensors float16
    python -m trainers.push runs/drive-unet my-lab/drive-unet --space my-lab/drive-unet-demo

Uploads model.safetensors, config.json, a generated README.md (the model card) and, when the
run has them, eval/pr_curve.png, eval/grid.png and eval/summary.json (at the repo's root, where
the card links them); the grid shows test images, so it is left out for data sets whose terms
forbid publishing them (DRIVE, ISBI 2012). `--half` stores the large weight tensors as float16
(`half_precision`); they load as float32 (`zoo.from_pretrained`). `--space OWNER/NAME` also
creates or updates a Gradio Space that serves the model (`push_space`): this version's app and
code, no weights (it loads them from the model repo, named by the Space variable
BIOSEG_WEIGHTS), with the model card and the Space linking to each other. The token is --token,
else HF_TOKEN, else the saved `hf auth login`; the Hub is HF_ENDPOINT (default
https://huggingface.co).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file, save

import zoo
from trainers.hub.model_card import published_images, run_card
from zoo._hub import CONFIG_NAME, WEIGHTS_NAME, bioseg_version, check_repo_id

HALF_MIN_ELEMENTS = 500_000


def half_precision(weights: Path, min_elements: int | None = None) -> bytes:
    """`weights` (a safetensors file) with its large float tensors stored as float16.

    Only tensors of at least `min_elements` values (the deep convolutions, where the bytes are)
    are rounded; norms, biases and the early, small convolutions stay float32, because every
    later layer amplifies their rounding. Measured on the bundled VGG16-FCN: all float16 moved
    probabilities by up to 1.2e-2; this split, by at most 4e-4, for 31.5 MB instead of 59.8
    (README).
    `min_elements` defaults to `HALF_MIN_ELEMENTS`.
    """
    min_elements = HALF_MIN_ELEMENTS if min_elements is None else min_elements
    state = {
        key: value.half() if value.is_floating_point() and value.numel() >= min_elements else value
        for key, value in load_file(weights).items()
    }
    if overflow := [key for key, value in state.items() if not value.isfinite().all()]:
        raise ValueError(
            f"{weights}: {', '.join(overflow[:5])} exceed the float16 range (65504); "
            "publish without --half"
        )
    return save(state, {"format": "pt"})


def _operations(
    run_dir: Path, repo_id: str, half: bool = False, space_id: str | None = None
) -> list[CommitOperationAdd]:
    """What one commit uploads: weights, config, card, and the evaluation files present."""
    card = run_card(run_dir, repo_id, space_id).encode("utf-8")
    files = {name: run_dir / name for name in (WEIGHTS_NAME, CONFIG_NAME)}
    dataset = json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8")).get("dataset")
    for name in (*published_images(dataset), "summary.json"):
        files[name] = run_dir / "eval" / name
    if half:
        files[WEIGHTS_NAME] = half_precision(files[WEIGHTS_NAME])
    return [
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card),
        *(
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=path)
            for name, path in files.items()
            if isinstance(path, bytes) or path.is_file()
        ),
    ]


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    token: str | None,
    private: bool = False,
    half: bool = False,
    space_id: str | None = None,
    commit_message: str = "Upload bioseg model",
) -> str:
    """Create `repo_id` if needed and upload the run to it in one commit; returns the repo URL.

    The run is checked first: its weights must load into the model config.json describes. With
    `space_id`, the card links to that Space (`push_space` creates it). `token` is used as given:
    this function never looks for an ambient one (the command lines do, before calling it), so
    a web app that passes a visitor's token can never push with its host's.
    """
    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    zoo.from_pretrained(run_dir)  # names a missing file, or weights that don't fit or hold NaN
    if not token or not isinstance(token, str):
        raise ValueError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    operations = _operations(run_dir, repo_id, half, space_id)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.create_commit(repo_id, operations, commit_message=commit_message)
    return str(url)


ROOT = Path(__file__).resolve().parents[2]
SPACE_CODE = ("app.py", "demo/*.py", "zoo/*.py", "trainers/*.py", "trainers/*/*.py")
"""Every file the app imports, as a Space runs it from a plain checkout."""


def space_readme(repo_id: str, space_id: str) -> str:
    """The Space's README.md: its front matter (Gradio, this Gradio version) and a line
    linking back to the model."""
    import gradio

    title = space_id.split("/")[1].replace("-", " ")
    return (
        f"---\ntitle: {title}\nsdk: gradio\nsdk_version: {gradio.__version__}\n"
        f"app_file: app.py\nmodels:\n  - {repo_id}\nlicense: apache-2.0\n---\n\n"
        f"# {title}\n\nThe bioseg demo of [{repo_id}](https://huggingface.co/{repo_id}): upload "
        "an image, see the prediction beside the target, with Dice, IoU and HD95. The weights "
        f"load from the model repo; the code is bioseg {bioseg_version()}.\n"
    )


def space_requirements() -> bytes:
    """requirements.txt of this checkout, with the bioseg version it was cut from."""
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    return (
        f"# bioseg {bioseg_version()}: app.py, zoo/ and trainers/ beside this file\n{text}".encode()
    )


def push_space(repo_id: str, space_id: str, *, token: str, private: bool = False) -> str:
    """Create or update the Gradio Space `space_id` that serves model `repo_id`; returns its URL.

    The Space holds the app and the code it imports, requirements.txt and its README (front
    matter, a link to the model); no weights. Its variable BIOSEG_WEIGHTS names the model, which
    the app offers first.
    """
    check_repo_id(space_id)
    files = sorted({path for pattern in SPACE_CODE for path in ROOT.glob(pattern)})
    operations = [
        CommitOperationAdd("README.md", space_readme(repo_id, space_id).encode()),
        CommitOperationAdd("requirements.txt", space_requirements()),
        *(CommitOperationAdd(str(path.relative_to(ROOT)), path) for path in files),
    ]
    api = HfApi(token=token)
    url = api.create_repo(
        space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
    )
    api.create_commit(
        space_id, operations, repo_type="space", commit_message=f"Serve {repo_id} (bioseg)"
    )
    api.add_space_variable(space_id, "BIOSEG_WEIGHTS", repo_id)
    return str(url)


def export_run(
    run_dir: str | Path, repo_id: str, folder: str | Path, *, half: bool = False
) -> Path:
    """Write what `push_run` would upload into a new local `folder` (e.g. the bundled weights)."""
    run_dir, folder = Path(run_dir), Path(folder)
    check_repo_id(repo_id)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; remove it or export elsewhere")
    zoo.from_pretrained(run_dir)  # the same checks as before an upload
    operations = _operations(run_dir, repo_id, half)
    folder.mkdir(parents=True)
    for operation in operations:
        content = operation.path_or_fileobj
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        (folder / operation.path_in_repo).write_bytes(data)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="training run folder (trainers.train output)")
    parser.add_argument("repo_id", help="Hub repo id OWNER/NAME, created if it does not exist")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN, then the saved login)")
    parser.add_argument("--export", type=Path, help="write the files to this new folder instead")
    parser.add_argument(
        "--space", help="also create or update the Gradio Space OWNER/NAME that serves the model"
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="store the large weight tensors as float16 (loaded as float32)",
    )
    args = parser.parse_args(argv)
    try:
        if args.export:
            url = str(export_run(args.run_dir, args.repo_id, args.export, half=args.half))
        else:
            token = args.token or get_token()  # a command line's own: never a server's
            url = push_run(
                args.run_dir,
                args.repo_id,
                token=token,
                private=args.private,
                half=args.half,
                space_id=args.space,
            )
            if args.space:
                space = push_space(args.repo_id, args.space, token=token, private=args.private)
                print(f"space: {space}")
    except (ValueError, TypeError, KeyError, OSError) as error:
        # KeyError: an unknown model name; HfHubHTTPError (an OSError): the Hub said no.
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        lines = str(text).strip().splitlines() or [type(error).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 1 if isinstance(error, HfHubHTTPError) else 2
    print(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
