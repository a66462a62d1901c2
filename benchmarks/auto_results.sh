#!/usr/bin/env bash
# The README's "--time-budget 20m" rows: `python -m trainers.train --data KIND:PATH --time-budget
# 20m` and no other flag (the plan is the default), one run per shared data set, one after the
# other, each evaluated on its test split. CORES=0 pins the runs to that core (the README's
# rows ran on one core each, beside the smp peer on the other: benchmarks/peer_results.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BUDGET=${BUDGET:-20m}
pin=()
[ -n "${CORES:-}" ] && pin=(taskset -c "$CORES")
for spec in "drive:$DATA/DRIVE" "isbi2012:$DATA/ISBI2012-membrane" "dsb2018:$DATA/DSB2018-nuclei"; do
    name="auto-${spec%%:*}"
    [ -e "runs/$name/eval/summary.json" ] || "${pin[@]}" python -m trainers.train \
        --time-budget "$BUDGET" --data "$spec" --output "runs/$name"
done
