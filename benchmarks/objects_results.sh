#!/usr/bin/env bash
# The README's object rows (docs/objects.md): the bundled semantic DSB model with connected
# components, the bundled object model, the Cellpose peer, on the DSB 2018 test split; and
# V_Rand / V_Info of the bundled membrane model on ISBI 2012's test slices. The object model
# was trained by the plan's default with a 20-minute budget:
#   python -m trainers.train --data dsb2018:../shared/data/DSB2018-nuclei --time-budget 20m \
#       --output runs/dsb2018-objects
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
python -m trainers.evaluate --weights weights/dsb2018-unet --data "dsb2018:$DATA/DSB2018-nuclei" \
    --output runs/objects-dsb2018-unet --overwrite
python -m trainers.evaluate --weights weights/dsb2018-objects --data "dsb2018:$DATA/DSB2018-nuclei" \
    --output runs/objects-dsb2018-objects --overwrite
python -m trainers.evaluate --weights weights/isbi2012-unet --data "isbi2012:$DATA/ISBI2012-membrane" \
    --output runs/regions-isbi2012-unet --overwrite
# The peers, 20 minutes each on the whole machine. Cellpose 3.1 in a virtual environment of its
# own (python -m venv --system-site-packages /tmp/cpenv && /tmp/cpenv/bin/pip install
# "cellpose<4"): it prints the seconds of one epoch, and how many epochs the minutes hold.
${CELLPOSE_PYTHON:-/tmp/cpenv/bin/python} benchmarks/peer_cellpose.py --data "$DATA/DSB2018-nuclei" \
    --minutes 20 --output runs/peer-cellpose
# The plain alternative: an smp U-Net (ResNet-18, from scratch) on the same object target.
python benchmarks/peer_smp.py --data "dsb2018:$DATA/DSB2018-nuclei" --objects --minutes 20 \
    --output runs/peer-smp-objects/summary.json
