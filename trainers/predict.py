"""Run a model over a whole study: a mask per image (a label image once the model gives
objects), optionally its probabilities, a row of figures per image, resumable, sharded over GPUs.

    python -m trainers.predict --weights weights/dsb2018-objects --input study/ --output masks/
    python -m trainers.predict --weights OWNER/NAME --input "plates/**/*.tif" --output out/
    torchrun --nproc-per-node 8 -m trainers.predict --weights W --input study/ --output out/
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m trainers.predict --weights W --input /shared/study --output /shared/out

A volume model (`unet3d`, trained on msd:, nnunet: or folders of volumes) takes volumes instead:
NIfTI, NRRD, MHA files and DICOM series folders, each written back as a `.nii.gz` label volume in
its input's geometry with the volume of each class in mL (`trainers.volumes.predict`).

`--input` is a folder (searched at every depth), a glob pattern, or a text file listing paths;
the images are read as the demo reads them (DICOM, TIFF and OME-TIFF, PNG, JPEG, 16-bit).
A relative glob is taken from the current folder. Under `--output`, each image's outputs keep
its path relative to the input folder: `a/b_mask.png` (0/255, or class ids; a model of the object
target's foreground, `trainers.scores.objects.foreground`), `a/b_labels.png` (16-bit, one id per
object; a 32-bit `a/b_labels.tif` past 65,535; a model of the object target),
`a/b_probabilities.npy` (float16 K x H x W, `--save-probabilities`); `results.csv` (one row per
image: size, foreground fraction per class, objects and their mean area in pixels and in the
file's unit, seconds), `errors.csv` (the files that could not be read, predicted or written,
with the reason) and `predict.json` (weights, threshold, versions, command). Two inputs whose
outputs would share a name (`a/b.png` and `a/b.tif`) are refused before anything is done.

Each output is written whole (a temporary file, then a rename) and an image's row last, so a
second run skips the images whose outputs are complete: a killed job loses at most the images
in flight; `--overwrite` redoes them. Nothing under the input folder is ever written. Files are
decoded in worker processes, outputs written in a background thread at most `WRITES_AHEAD`
images behind. Under `torchrun` each rank takes every world-th image on its own GPU (PyTorch's
launcher and rendezvous) and rank 0 merges the rows.
The exit status is the number of images that failed (at most 125), 0 when none did.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import zoo
from trainers import ranks
from trainers.cli import exit_on_user_error, threshold_argument
from trainers.data.inputs import Input, check_output_outside, list_inputs
from trainers.data.medical import Decoded
from trainers.data.readers import DataError, read_decoded
from trainers.outputs import write_errors, write_results
from trainers.scores.objects import components, foreground, split_objects, write_labels
from trainers.scores.scoring import class_map, predict_probabilities
from zoo._files import atomic_write

ROWS = ".rows"  # under --output: one JSON row per finished image, the mark that it is done
MAX_STATUS = 125
WRITES_AHEAD = 4  # images predicted but not yet written, at most: each holds its pixels and
# probabilities (a 4096 x 4096 image of four classes, 320 MB), so the writer bounds memory


@dataclass(frozen=True)
class Setup:
    """What every image's prediction needs: the model, its engine, threshold and classes."""

    model: zoo.SegmentationModel
    forward: Any  # the engine's forward (`zoo.forward_input`'s), or None: the model on its device
    precision: str
    threshold: float
    objects: bool
    classes: list[str]
    save_probabilities: bool


class Reading(Dataset):
    """The images to predict, decoded in the loader's worker processes: (input, decoded image
    or the reason it could not be read)."""

    def __init__(self, inputs: list[Input]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Input, Decoded | str]:
        found = self.inputs[index]
        try:
            return found, read_decoded(found.path)
        except (DataError, OSError, ValueError) as error:
            return found, str(error)


def outputs_of(found: Input, output: Path) -> Path:
    """The stem under `output` that an input's outputs share (`a/b` for `a/b.png`)."""
    return output / found.relative.with_suffix("")


def row_file(found: Input, output: Path) -> Path:
    return output / ROWS / found.relative.with_suffix(".json")


def check_distinct_outputs(inputs: list[Input]) -> None:
    """A DataError naming both files when two inputs would write the same outputs and row
    (`a/b.png` and `a/b.tif` both give `a/b_mask.png`): one would be lost, and a resume would
    skip it."""
    seen: dict[Path, Input] = {}
    for found in inputs:
        stem = found.relative.with_suffix("")
        if (other := seen.setdefault(stem, found)) is not found:
            raise DataError(
                f"{other.path} and {found.path} would both be written as {stem}_mask.png (and "
                "one row of results.csv) under --output: rename one, or predict them apart"
            )


def predict_one(setup: Setup, decoded: Decoded) -> np.ndarray:
    """Class probabilities K x H x W of one decoded image."""
    image = torch.from_numpy(np.ascontiguousarray(decoded.pixels)).permute(2, 0, 1)
    return predict_probabilities(
        setup.model, image, forward=setup.forward, precision=setup.precision
    )


def write_outputs(
    setup: Setup,
    found: Input,
    decoded: Decoded,
    probabilities: np.ndarray,
    stem: Path,
    seconds: float,
) -> dict[str, Any]:
    """The mask (and label image, probabilities) of one image, each written whole; its row."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if setup.objects:
        labels = split_objects(probabilities)
        classes = foreground(probabilities).view(np.uint8)
    else:
        classes = class_map(probabilities, setup.threshold).astype(np.uint8)
        labels = components(classes > 0) if probabilities.shape[0] == 1 else None
    binary = setup.objects or probabilities.shape[0] == 1
    _save_png(stem.with_name(stem.name + "_mask.png"), classes * 255 if binary else classes)
    if setup.objects:
        write_labels(labels, stem)
    if setup.save_probabilities:
        path = stem.with_name(stem.name + "_probabilities.npy")
        atomic_write(path, lambda tmp: _save_npy(tmp, probabilities.astype(np.float16)))
    return figures(setup, found, decoded, classes, labels, seconds)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:  # a handle: np.save would add .npy to the temporary name
        np.save(handle, array)


def _save_png(path: Path, pixels: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def figures(
    setup: Setup,
    found: Input,
    decoded: Decoded,
    classes: np.ndarray,
    labels: np.ndarray | None,
    seconds: float,
) -> dict[str, Any]:
    """One image's row: path, size, foreground fraction per class, objects, seconds."""
    height, width = classes.shape
    names = setup.classes[1:2] if setup.objects else setup.classes[1:]
    row: dict[str, Any] = {"path": found.relative.as_posix(), "height": height, "width": width}
    for c, name in enumerate(names, start=1):
        row[f"fraction_{name}"] = round(float((classes == c).mean()), 6)
    if labels is not None:
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
        row["objects"] = int(areas.size)
        row["mean_area_px"] = round(float(areas.mean()), 2) if areas.size else 0.0
        if decoded.spacing:
            pixel = decoded.spacing[0] * decoded.spacing[1]
            row[f"mean_area_{decoded.unit}2"] = round(row["mean_area_px"] * pixel, 6)
    row["seconds"] = round(seconds, 3)
    return row


def make_setup(
    args: argparse.Namespace, todo: list[Input], device: torch.device, model: zoo.SegmentationModel
) -> Setup:
    """The model at `--weights`, on `device`: the GPU of this rank when there is one (autocast
    bf16, or fp16 where the GPU has no bf16), else on the CPU through `--engine`, or the engine
    measured fastest on the first image to predict (bf16 only where its mask agrees with
    float32's)."""
    config = model.pretrained_config
    if device.type == "cuda":
        model.to(device).to(memory_format=torch.channels_last)
        forward, precision = None, "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        runner, used = zoo.engine_predict(model, args.engine, sample=sample(todo))
        print(f"engine: {used}")
        forward, precision = runner, "fp32"
    classes = list(config.get("classes") or ["background", "foreground"])
    threshold = args.threshold if args.threshold is not None else config.get("threshold", 0.5)
    return Setup(
        model,
        forward,
        precision,
        float(threshold),
        bool(config.get("objects")),
        classes,
        args.save_probabilities,
    )


def sample(todo: list[Input]) -> torch.Tensor | None:
    """The first readable image to predict (at most 512 x 512 of it), 1 x C x H x W in [0, 1]:
    what the engine's choice is measured on."""
    for found in todo[:3]:
        try:
            pixels = read_decoded(found.path).pixels[:512, :512]
        except (DataError, OSError):
            continue
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return None


def reduce_device(backend: str) -> torch.device:
    """Where a collective's tensors must live: this rank's GPU for NCCL, the CPU for gloo."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def total_over_ranks(count: int) -> int:
    """`count` summed over every rank of the process group."""
    total = torch.tensor([count], device=reduce_device(dist.get_backend()))
    dist.all_reduce(total)
    return int(total.item())


def run(args: argparse.Namespace) -> int:
    """Predict every input not done yet; returns how many failed (over all ranks). A volume
    model's run goes to `trainers.volumes.predict`."""
    model = zoo.from_pretrained(args.weights)
    if model.spec.spatial_dims == 3:
        from trainers.volumes.predict import predict_volumes

        return predict_volumes(args, model)
    output = Path(args.output)
    inputs = list_inputs(args.input)
    check_output_outside(output, inputs)
    check_distinct_outputs(inputs)
    rank, world, device = ranks.setup()
    mine = inputs[rank::world]
    todo = [i for i in mine if args.overwrite or not row_file(i, output).is_file()]
    if rank == 0:
        done = len(mine) - len(todo)
        print(
            f"{len(inputs)} images under {args.input}; {len(todo)} to predict here"
            + (f", {done} already done (--overwrite redoes them)" if done else "")
        )
    setup = make_setup(args, todo, device, model)
    failed = predict_all(setup, todo, output, args.workers, rank)
    if world > 1:
        failed = total_over_ranks(failed)
        dist.barrier()
    if rank == 0:
        merge(output, inputs, args, setup)
    if world > 1:
        dist.barrier()  # the merged files are written before any rank exits
        dist.destroy_process_group()
    return failed


def predict_all(setup: Setup, todo: list[Input], output: Path, workers: int, rank: int) -> int:
    """Predict `todo`, reading ahead in `workers` processes and writing behind in a thread, at
    most `WRITES_AHEAD` images behind; the failures (read, predicted or written) go to this
    rank's errors file. Returns how many failed."""
    from tqdm import tqdm

    loader = DataLoader(
        Reading(todo), batch_size=None, num_workers=workers, collate_fn=lambda item: item
    )
    errors: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: deque[Future[tuple[str, str] | None]] = deque()
        bar = tqdm(loader, total=len(todo), unit="img", disable=rank != 0 or not todo)
        for found, decoded in bar:
            if isinstance(decoded, str):
                errors.append((found.relative.as_posix(), decoded))
                continue
            start = time.perf_counter()
            try:
                probabilities = predict_one(setup, decoded)
            except (ValueError, RuntimeError, zoo.ModelBuildError) as error:
                errors.append((found.relative.as_posix(), f"{type(error).__name__}: {error}"))
                continue
            seconds = time.perf_counter() - start
            if len(pending) == WRITES_AHEAD:  # wait for the oldest: memory stays bounded
                errors += _failed(pending.popleft())
            pending.append(
                writer.submit(finish, setup, found, decoded, probabilities, output, seconds)
            )
        while pending:
            errors += _failed(pending.popleft())
    write_errors(output / f".errors-{rank}.csv", errors)
    return len(errors)


def _failed(job: Future[tuple[str, str] | None]) -> list[tuple[str, str]]:
    error = job.result()
    return [error] if error else []


def finish(
    setup: Setup,
    found: Input,
    decoded: Decoded,
    probabilities: np.ndarray,
    output: Path,
    seconds: float,
) -> tuple[str, str] | None:
    """Write one image's outputs, then its row: the row says the outputs are complete. A
    failure is that image's (path, reason), and the job goes on with the others."""
    try:
        row = write_outputs(
            setup, found, decoded, probabilities, outputs_of(found, output), seconds
        )
        path = row_file(found, output)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(row)))
    except Exception as error:  # a full disk, a permission, a bug: this image's, recorded
        return found.relative.as_posix(), f"writing its outputs: {type(error).__name__}: {error}"
    return None


def merge(output: Path, inputs: list[Input], args: argparse.Namespace, setup: Setup) -> None:
    """results.csv from every finished image's row (in input order), errors.csv from every
    rank's errors, predict.json."""
    rows = write_results(output / "results.csv", [row_file(i, output) for i in inputs])
    errors = list(_error_rows(output))
    write_errors(output / "errors.csv", errors)
    about = {
        "weights": args.weights,
        "input": str(args.input),
        "images": len(inputs),
        "predicted": len(rows),
        "failed": len(errors),
        "threshold": setup.threshold,
        "objects": setup.objects,
        "classes": setup.classes,
        "bioseg": zoo._hub.bioseg_version(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    (output / "predict.json").write_text(json.dumps(about, indent=2) + "\n")
    print(
        f"{len(rows)} images in {output / 'results.csv'}"
        + (f"; {len(errors)} failed: {output / 'errors.csv'}" if errors else "")
    )


def _error_rows(output: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(output.glob(".errors-*.csv")):
        with path.open(newline="") as handle:
            yield from (tuple(row) for row in list(csv.reader(handle))[1:])
        path.unlink()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.predict",
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:7]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", required=True, help="a run folder, bundled folder or Hub id")
    parser.add_argument("--input", required=True, help="a folder, a glob pattern, or a .txt list")
    parser.add_argument("--output", required=True, type=Path, help="a folder outside the input")
    parser.add_argument("--threshold", type=threshold_argument, help="default: the saved one")
    parser.add_argument("--save-probabilities", action="store_true", help="float16 .npy files")
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument("--workers", type=int, default=2, help="processes decoding the files")
    parser.add_argument("--engine", choices=zoo.ENGINES, help="CPU engine (default: the fastest)")
    parser.add_argument(
        "--series", help="volumes: the DICOM series to read (its UID or the start of one)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        failed = run(args)
    raise SystemExit(min(failed, MAX_STATUS))


if __name__ == "__main__":
    main()
