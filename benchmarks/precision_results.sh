#!/usr/bin/env bash
# The README's bf16-against-fp32 rows: the same DRIVE run (the plan's unet 16 at 128x128 crops,
# batch 8, the same seed and 1500 steps) once under bf16 autocast and once in float32, on the
# CPU, each evaluated on the test split. Pass CORES=1 to pin both to one core.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
pin=()
[ -n "${CORES:-}" ] && pin=(taskset -c "$CORES")
for precision in bf16 fp32; do
    out="runs/precision-drive-$precision"
    [ -e "$out/eval/summary.json" ] || "${pin[@]}" python -m trainers.train \
        --data "drive:$DATA/DRIVE" --output "$out" --precision "$precision" --steps 1500 \
        --model unet --model-kwargs '{"base_channels": 16}' --image-size 128 --batch-size 8
done
