"""The table of the plan against the smp peer, from the runs the two scripts leave:

    bash benchmarks/peer_results.sh && bash benchmarks/auto_results.sh   # CORES=0 / CORES=1
    python benchmarks/peer_table.py

Reads runs/peer-smp-<set>.json and runs/auto-<set>/ (train_config.json's note, plan.json and
eval/summary.json); prints one Markdown row per shared data set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "runs"
SETS = {"drive": "DRIVE", "isbi2012": "ISBI 2012", "dsb2018": "DSB 2018"}


def row(key: str, name: str) -> str:
    peer = json.loads((RUNS / f"peer-smp-{key}.json").read_text())
    run = RUNS / f"auto-{key}"
    note = json.loads((run / "train_config.json").read_text())["note"]
    plan = json.loads((run / "plan.json").read_text())
    summary = json.loads((run / "eval" / "summary.json").read_text())
    ours, theirs = summary["pooled"]["dice"], peer["pooled_dice"]
    model = f"unet {plan['model_kwargs'].get('base_channels')}, {plan['image_size']} crops, " \
        f"{plan['precision']}"  # fmt: skip
    per_image = summary["metrics"]["dice"]
    return (
        f"| {name} | {peer['steps']} | {theirs:.3f} | {model} | {note['steps']} in "
        f"{note['seconds'] / 60:.1f} min ({note['ended_by']}) | {ours:.3f} | "
        f"{per_image['mean']:.3f} ± {per_image['std']:.3f} | {ours - theirs:+.3f} |"
    )


if __name__ == "__main__":
    print("| data set | peer steps | peer pooled Dice | plan | plan steps | plan pooled Dice "
          "| plan per image | lead |")  # fmt: skip
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for key, name in SETS.items():
        if (RUNS / f"peer-smp-{key}.json").is_file() and (
            RUNS / f"auto-{key}/eval/summary.json"
        ).is_file():
            print(row(key, name))
