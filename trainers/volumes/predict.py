"""A volume model run over a study of volumes, for `python -m trainers.predict` (which hands a
volume model's weights here).

    python -m trainers.predict --weights runs/hippocampus --input study/ --output labels/

`--input` is a volume file (NIfTI, NRRD, MHA), a DICOM series (a folder or a zip of its slices),
or a folder searched at every depth: each volume file is one input, and so is each folder that
holds a DICOM series (named by the folder; a folder of unrelated 2D DICOM images is not one).
Under `--output`, each input's label volume keeps its relative name, `a/case.nii.gz` (a series
folder `a/series/` gives `a/series.nii.gz`), in its input's own geometry; `results.csv` gives a
row per volume (shape, spacing, modality, each class's volume in mL, seconds), `errors.csv` the
inputs that failed and why, `predict.json` the run. A second run skips the volumes already done.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zoo
from trainers.data.errors import DataError
from trainers.outputs import write_errors, write_results
from trainers.scores.surface import class_volumes_ml
from trainers.volumes.dicom_series import holds_series
from trainers.volumes.image import is_volume_file, read_volume, volume_stem, write_labels
from trainers.volumes.infer import VolumeRecipe, predict_volume
from zoo._files import atomic_write

ROWS = ".rows"


@dataclass(frozen=True)
class VolumeInput:
    """A volume to predict (a file, or a series folder or zip) and its output name's stem,
    relative to the output folder."""

    path: Path
    relative: Path


def list_volume_inputs(source: str | Path) -> list[VolumeInput]:
    """The volumes of `source`, sorted (see the module's rules)."""
    path = Path(source).expanduser()
    if path.is_file() or (path.is_dir() and holds_series(path)):
        return [VolumeInput(path, Path(volume_stem(path)))]
    if not path.is_dir():
        raise DataError(f"{source}: no such volume file, series or folder")
    found = [
        VolumeInput(p, p.relative_to(path).with_name(volume_stem(p)))
        for p in sorted(path.rglob("*"))
        if p.is_file() and is_volume_file(p)
    ]
    found += [
        VolumeInput(p, p.relative_to(path))
        for p in sorted(path.rglob("*"))
        if p.is_dir() and holds_series(p)
    ]
    if not found:
        raise DataError(f"{source}: no volume files (NIfTI, NRRD, MHA) and no DICOM series")
    return sorted(found, key=lambda item: str(item.relative))


def predict_volumes(args: argparse.Namespace, model: zoo.SegmentationModel) -> int:
    """Predict every input volume not done yet; the number that failed."""
    output = Path(args.output)
    inputs = list_volume_inputs(args.input)
    _check_outside(output, Path(args.input))
    recipe = VolumeRecipe.of(model)
    classes = list(model.pretrained_config.get("classes") or ["background", "foreground"])
    todo = [i for i in inputs if args.overwrite or not _row_file(i, output).is_file()]
    print(f"{len(inputs)} volumes under {args.input}; {len(todo)} to predict")
    errors = []
    for found in todo:
        started = time.perf_counter()
        try:
            volume = read_volume(found.path, series=getattr(args, "series", None))
            if recipe.modality and volume.modality and volume.modality != recipe.modality:
                trained = recipe.modality
                print(f"warning: {found.relative} is {volume.modality}; the model knows {trained}")
            labels = predict_volume(model, volume, recipe)
            write_labels(labels, volume, output / f"{found.relative}.nii.gz")
        except (DataError, ValueError, RuntimeError, OSError) as error:
            errors.append((found.relative.as_posix(), str(error)))
            continue
        row = _row(found, volume, labels, classes, time.perf_counter() - started)
        path = _row_file(found, output)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, row=row: tmp.write_text(json.dumps(row)))
    _merge(output, inputs, errors, args)
    return len(errors)


def _row(found: VolumeInput, volume, labels, classes: list[str], seconds: float) -> dict[str, Any]:
    depth, height, width = volume.shape
    row: dict[str, Any] = {
        "path": found.relative.as_posix(),
        "output": f"{found.relative.as_posix()}.nii.gz",
        "shape": f"{width}x{height}x{depth}",
        "spacing_mm": "x".join(f"{s:g}" for s in reversed(volume.spacing)),
        "modality": volume.modality,
    }
    for name, ml in zip(
        classes[1:], class_volumes_ml(labels, volume.spacing, len(classes)), strict=True
    ):
        row[f"volume_{name}_ml"] = round(ml, 4)
    row["seconds"] = round(seconds, 3)
    return row


def _row_file(found: VolumeInput, output: Path) -> Path:
    return output / ROWS / f"{found.relative}.json"


def _check_outside(output: Path, source: Path) -> None:
    root = (source if source.is_dir() else source.parent).expanduser().resolve()
    out = output.expanduser().resolve()
    if out == root or root in out.parents:
        raise DataError(
            f"--output {output} lies inside the inputs' folder {root}: choose a folder outside it"
        )


def _merge(output: Path, inputs: list[VolumeInput], errors: list[tuple[str, str]], args) -> None:
    rows = write_results(output / "results.csv", [_row_file(i, output) for i in inputs])
    write_errors(output / "errors.csv", errors)
    about = {
        "weights": args.weights,
        "input": str(args.input),
        "volumes": len(inputs),
        "predicted": len(rows),
        "failed": len(errors),
        "bioseg": zoo._hub.bioseg_version(),
    }
    (output / "predict.json").write_text(json.dumps(about, indent=2) + "\n")
    print(
        f"{len(rows)} volumes in {output / 'results.csv'}"
        + (f"; {len(errors)} failed: {output / 'errors.csv'}" if errors else "")
    )
