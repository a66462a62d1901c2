"""nnU-Net v2, the tool bioseg's users would pick for volumes, on bioseg's own split of MSD
Hippocampus: trained on this machine, predicted and scored by bioseg's metrics on the same test
cases.

    python benchmarks/peer_nnunet.py --data ../shared/data/MSD-Hippocampus --config 2d \\
        --trainer nnUNetTrainer_1epoch --work /tmp/nnunet

In its own virtual environment (`--venv`, made with `--system-site-packages` so torch is not
installed twice, and `pip install nnunetv2` into it; never bioseg's dependencies), the script
writes nnU-Net's raw layout from the Decathlon folder (`imagesTr/CASE_0000.nii.gz`, bioseg's test
cases as `imagesTs/`), runs `nnUNetv2_plan_and_preprocess` for `--config`, puts bioseg's training
and validation cases in `splits_final.json` as fold 0, trains fold 0 on the CPU with `--trainer`
(the fewer-epoch variants are nnU-Net's own: `nnUNetTrainer_1epoch`, `_5epochs`, ...), predicts
the test cases (nnU-Net's defaults, mirroring included) and scores them with
`trainers.scores.surface.volume_scores`. It prints the minutes of each stage and the mean Dice
per class as JSON; bioseg given the training minutes is then
`python -m trainers.train --data msd:PATH --time-budget Nm`. `--minutes N` stops a training that
has not ended after N minutes (and says so, with no scores: there is no model to score).

Measured here, 2026-12-06: `--config 2d --trainer nnUNetTrainer_1epoch` (plan and preprocess
0.5 min; nnU-Net's 2d plan: batch 292 of 56x40 slices, a 4-stage 32-256 U-Net) had not finished
its one epoch of 250 iterations after 27 minutes of training on this 2-core CPU, and was stopped
by hand (`--minutes 27` now does the same).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = "Dataset004_Hippocampus"


def venv_python(venv: Path) -> Path:
    """The venv's interpreter, made and given nnunetv2 when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True
        )
        subprocess.run([str(python), "-m", "pip", "install", "-q", "nnunetv2"], check=True)
    return python


def write_raw(data: Path, raw: Path) -> dict[str, list[str]]:
    """nnU-Net's raw layout of the Decathlon folder on bioseg's split; the split."""
    from trainers.volumes.layouts import parse_volume_spec

    source = parse_volume_spec(f"msd:{data}")
    folder = raw / DATASET
    for name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for split, cases in source.cases.items():
        images, labels = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
        for case in cases:
            shutil.copy(case.images[0], folder / images / f"{case.id}_0000.nii.gz")
            shutil.copy(case.label, folder / labels / f"{case.id}.nii.gz")
    labels = {name: value for value, name in enumerate(source.class_names)}
    training = len(source.cases["train"]) + len(source.cases.get("val", []))
    description = {
        "channel_names": dict(enumerate(source.channel_names)),
        "labels": labels,
        "numTraining": training,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(description, indent=2))
    return source.split_listing()


def run(command: list[str], env: dict[str, str], log: Path, limit: float | None = None) -> float:
    """Run a stage, its output appended to `log`; its minutes, or None when it ran past `limit`
    minutes (then stopped, with its worker processes)."""
    started = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            if process.wait(timeout=limit * 60 if limit else None):
                raise subprocess.CalledProcessError(process.returncode, command)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            return None
    return (time.monotonic() - started) / 60


def score(data: Path, predictions: Path, test: list[str], class_names: list[str]) -> dict:
    from trainers.scores import metrics
    from trainers.scores.surface import volume_scores
    from trainers.volumes.cases import read_case
    from trainers.volumes.image import read_label_volume
    from trainers.volumes.layouts import Case

    rows: dict[str, list[dict]] = {name: [] for name in class_names[1:]}
    for case_id in test:
        case = Case(
            case_id,
            (data / "imagesTr" / f"{case_id}.nii.gz",),
            data / "labelsTr" / f"{case_id}.nii.gz",
        )
        image, label = read_case(case)
        predicted = read_label_volume(predictions / f"{case_id}.nii.gz", image)
        found = volume_scores(
            predicted.array, label.array, spacing=image.spacing, num_classes=len(class_names)
        )
        for c, row in found.items():
            rows[class_names[c]].append(row)
    per_class = {name: metrics.summarize(found)["dice"]["mean"] for name, found in rows.items()}
    return {"dice": per_class, "mean_dice": sum(per_class.values()) / len(per_class)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the Decathlon folder")
    parser.add_argument("--config", default="2d", help="nnU-Net configuration: 2d, 3d_fullres")
    parser.add_argument("--trainer", default="nnUNetTrainer_1epoch")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/nnunet-venv"))
    parser.add_argument("--minutes", type=float, help="stop the training after this many minutes")
    args = parser.parse_args()
    python = venv_python(args.venv)
    tools = python.parent
    raw, pre, results = (args.work / name for name in ("raw", "preprocessed", "results"))
    split = write_raw(args.data.resolve(), raw)
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(results),
        "nnUNet_n_proc_DA": "2",
        "nnUNet_def_n_proc": "2",
    }
    log = args.work / "nnunet.log"
    minutes = {
        "plan_and_preprocess": run(
            [str(tools / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", args.config, "-np", "2"],
            env,
            log,
        )
    }
    folds = [{"train": split["train"], "val": split["val"]}]
    (pre / DATASET / "splits_final.json").write_text(json.dumps(folds))
    train = [str(tools / "nnUNetv2_train"), "4", args.config, "0", "-device", "cpu"]
    minutes["train"] = run([*train, "-tr", args.trainer], env, log, args.minutes)
    if minutes["train"] is None:  # stopped: no model to predict with
        result = {"config": args.config, "trainer": args.trainer, "minutes": minutes}
        result["stopped_unfinished_after_minutes"] = args.minutes
        (args.work / "result.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    predictions = args.work / "predictions"
    minutes["predict"] = run(
        [
            str(tools / "nnUNetv2_predict"),
            *("-i", str(raw / DATASET / "imagesTs"), "-o", str(predictions)),
            *("-d", "4", "-c", args.config, "-f", "0", "-tr", args.trainer, "-device", "cpu"),
            *("-npp", "1", "-nps", "1"),
        ],
        env,
        log,
    )
    description = json.loads((raw / DATASET / "dataset.json").read_text())
    names = sorted(description["labels"], key=description["labels"].get)
    found = score(args.data.resolve(), predictions, split["test"], names)
    result = {"config": args.config, "trainer": args.trainer, "minutes": minutes, **found}
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
