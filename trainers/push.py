"""Publish a training run folder to the Hugging Face Hub, in one commit.

    python -m trainers.push runs/drive-unet my-lab/drive-unet [--private] [--token T]
    python -m trainers.push runs/drive-unet my-lab/drive-unet --export weights/drive-unet
    python -m trainers.push runs/dsb2018-fcn8s my-lab/dsb2018-fcn8s --half  # large tensors float16

Uploads model.safetensors, config.json, a generated README.md (the model card) and, when the
run has them, eval/pr_curve.png, eval/grid.png and eval/summary.json (at the repo's root, where
the card links them); the grid shows test images, so it is left out for data sets whose terms
forbid publishing them (DRIVE, ISBI 2012). `--half` stores the large weight tensors as float16
(`half_precision`); they load as float32 (`zoo.from_pretrained`). The token is --token, else
HF_TOKEN, else the saved `hf auth login`; the Hub is HF_ENDPOINT (default https://huggingface.co).
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
from trainers.model_card import model_card, published_images
from zoo._hub import CONFIG_NAME, WEIGHTS_NAME, check_repo_id

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


def _operations(run_dir: Path, repo_id: str, half: bool = False) -> list[CommitOperationAdd]:
    """What one commit uploads: weights, config, card, and the evaluation files present."""
    card = model_card(run_dir, repo_id).encode("utf-8")
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
    token: str | None = None,
    private: bool = False,
    half: bool = False,
    commit_message: str = "Upload bioseg model",
) -> str:
    """Create `repo_id` if needed and upload the run to it in one commit; returns the repo URL.

    The run is checked first: its weights must load into the model config.json describes.
    """
    run_dir = Path(run_dir)
    check_repo_id(repo_id)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    zoo.from_pretrained(run_dir)  # names a missing file, or weights that don't fit or hold NaN
    token = token or get_token()
    if not token:
        raise ValueError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    operations = _operations(run_dir, repo_id, half)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.create_commit(repo_id, operations, commit_message=commit_message)
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
        "--half",
        action="store_true",
        help="store the large weight tensors as float16 (loaded as float32)",
    )
    args = parser.parse_args(argv)
    try:
        if args.export:
            url = str(export_run(args.run_dir, args.repo_id, args.export, half=args.half))
        else:
            url = push_run(
                args.run_dir, args.repo_id, token=args.token, private=args.private, half=args.half
            )
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
