#!/usr/bin/env bash
# Pretrain UniSRec on the synthetic sources (pretrain/configs/unisrec-demo.yaml), then compare on
# synthetic targets: UniSRec pretrained + PEFT (transductive, the default), UniSRec from scratch,
# and the same pair in inductive mode, several seeds.
# Usage: benchmarks/unisrec_transfer.sh OUT_DIR TARGETS SEEDS PRETRAIN_EPOCHS
#   e.g. benchmarks/unisrec_transfer.sh runs/unisrec syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office 3 10
set -euo pipefail
out=${1:?output folder}; targets=${2:-syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office}
seeds=${3:-3}; epochs=${4:-10}
PYTHON=${PYTHON:-python3}
$PYTHON pretrain/run.py --config pretrain/configs/unisrec-demo.yaml --quiet --output "$out/pretrain" train.epochs="$epochs"
for mode in transductive inductive; do
  $PYTHON -m finetune.cli --domain "$targets" --checkpoint "$out/pretrain/final" --mode "$mode" \
    --model unisrec,unisrec@scratch --seeds "$seeds" --output "$out/finetune-$mode" --quiet \
    train.epochs=30 train.patience=10 > "$out/finetune-$mode.log" 2>&1
  echo "== $mode"; tail -n 8 "$out/finetune-$mode.log"
done
