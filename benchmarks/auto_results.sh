#!/usr/bin/env bash
# The README's "--plan auto --time-budget 20m" rows: one run per shared data set, one after the
# other on the whole machine (about 65 minutes on 2 CPU cores), each evaluated on its test split.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BUDGET=${BUDGET:-20m}
for spec in "drive:$DATA/DRIVE" "isbi2012:$DATA/ISBI2012-membrane" "dsb2018:$DATA/DSB2018-nuclei"; do
    name="auto-${spec%%:*}"
    [ -e "runs/$name/eval/summary.json" ] || python -m trainers.train --plan auto \
        --time-budget "$BUDGET" --data "$spec" --output "runs/$name"
done
