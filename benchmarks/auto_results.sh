#!/usr/bin/env bash
# The README's plan rows: `python -m trainers.train --data KIND:PATH` and no other flag (the plan
# allows itself 20 minutes; BUDGET=20m adds `--time-budget 20m`), one run per shared data set,
# one after the other, each evaluated on its test split. CORES=1 pins the runs to that core (the
# README's rows ran on one core each, beside the smp peer on the other: peer_results.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BUDGET=${BUDGET:-}
pin=()
budget=()
[ -n "$BUDGET" ] && budget=(--time-budget "$BUDGET")
[ -n "${CORES:-}" ] && pin=(taskset -c "$CORES")
for spec in "drive:$DATA/DRIVE" "isbi2012:$DATA/ISBI2012-membrane" "dsb2018:$DATA/DSB2018-nuclei"; do
    name="auto-${spec%%:*}"
    [ -e "runs/$name/eval/summary.json" ] || "${pin[@]}" python -m trainers.train \
        "${budget[@]}" --data "$spec" --output "runs/$name"
done
