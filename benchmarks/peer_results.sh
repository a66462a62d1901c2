#!/usr/bin/env bash
# The smp peer beside the "--plan auto --time-budget 20m" rows: one 20-minute run per shared data
# set, one after the other on the whole machine (about 65 minutes on 2 CPU cores).
# Needs: pip install -r benchmarks/requirements.txt. CORES=0 pins the runs to that core.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
MINUTES=${MINUTES:-20}
pin=()
[ -n "${CORES:-}" ] && pin=(taskset -c "$CORES")
for spec in "drive:$DATA/DRIVE" "isbi2012:$DATA/ISBI2012-membrane" "dsb2018:$DATA/DSB2018-nuclei"; do
    out="runs/peer-smp-${spec%%:*}.json"
    [ -e "$out" ] || "${pin[@]}" python benchmarks/peer_smp.py --data "$spec" --minutes "$MINUTES" --output "$out"
done
