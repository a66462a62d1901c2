#!/usr/bin/env bash
# Train and evaluate the models behind the README's results table (CPU: about 3 hours on 2 cores;
# `bash benchmarks/train_results.sh drive-unet isbi2012-unet dsb2018-unet`: the U-Nets alone).
# Each run writes runs/<name>/ with model.safetensors, config.json, metrics.csv and eval/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
UNET16=(--model unet --model-kwargs '{"base_channels": 16}' --workers 1)
ONLY=" $* "  # run names given as arguments (e.g. drive-unet isbi2012-unet): only those
for name in "$@"; do  # each must be one of the runs below
    grep -q "^run $name " "$0" || { echo "error: no run named '$name' in $0" >&2; exit 2; }
done
run() {
    [[ "$ONLY" == "  " || "$ONLY" == *" $1 "* ]] || return 0
    [ -e "runs/$1/eval/summary.json" ] || python -m trainers.train --plan none --output "runs/$1" "${@:2}"
}

run drive-unet "${UNET16[@]}" --data "drive:$DATA/DRIVE" \
    --epochs 50 --image-size 128 --patches-per-image 16 --batch-size 8
run isbi2012-unet "${UNET16[@]}" --data "isbi2012:$DATA/ISBI2012-membrane" --in-channels 1 \
    --epochs 20 --image-size 192 --patches-per-image 8 --batch-size 8
run dsb2018-unet "${UNET16[@]}" --data "dsb2018:$DATA/DSB2018-nuclei" \
    --epochs 10 --image-size 128 --batch-size 8
# The report's setting minus pretraining (no ImageNet weights here): the frozen VGG16 is random,
# and both models collapse to "every pixel is a vessel" (kept in the README as a lesson).
run drive-vgg16_fcn --preset report --no-pretrained --data "drive:$DATA/DRIVE" --workers 1 \
    --image-size 128 --patches-per-image 16 --batch-size 8
run drive-fcn8s --model fcn8s --model-kwargs '{"freeze_backbone": true}' --data "drive:$DATA/DRIVE" \
    --workers 1 --epochs 3 --image-size 128 --patches-per-image 4 --batch-size 8
# The report's models, from scratch (no ImageNet weights can be had here): VGG16 with batch norm,
# the backbone trained rather than frozen (the frozen random VGG16 of the report's setting only
# learns "every pixel is foreground"), and for vgg16_fcn batch norm in its decoder too (without
# it the output starts out the same at every pixel and stays there). On DSB 2018 nuclei, beside
# the nuclei U-Net: see the README.
SCRATCH='"backbone": "vgg16_bn", "freeze_backbone": false'
run dsb2018-vgg16_fcn --model vgg16_fcn --model-kwargs "{$SCRATCH, \"decoder_norm\": true}" \
    --data "dsb2018:$DATA/DSB2018-nuclei" --workers 1 --epochs 12 --image-size 128 --batch-size 8
run dsb2018-fcn8s --model fcn8s --model-kwargs "{$SCRATCH, \"fc_channels\": 256}" \
    --data "dsb2018:$DATA/DSB2018-nuclei" --workers 1 --epochs 3 --image-size 128 --batch-size 8

# Bundle the small best model per data set for the demo (weights, config, model card, figures).
for name in drive-unet isbi2012-unet dsb2018-unet; do
    [ -e "weights/$name" ] || python -m trainers.push "runs/$name" "bioseg/$name" --export "weights/$name"
done
for name in dsb2018-vgg16_fcn dsb2018-fcn8s; do  # float16 storage: each file under 45 MB
    [ -e "weights/$name" ] || python -m trainers.push "runs/$name" "bioseg/$name" --export "weights/$name" --half
done
