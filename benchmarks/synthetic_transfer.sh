#!/usr/bin/env bash
# Pretrain MISSRec on the synthetic sources, then compare on synthetic targets: MISSRec
# (pretrained, PEFT), MISSRec (scratch), SASRec, MostPop, several seeds.
# Usage: [MODELS=...] [PRETRAIN_ARGS='key=value ...'] [FINETUNE_ARGS='key=value ...'] benchmarks/synthetic_transfer.sh OUT_DIR TARGETS SEEDS PRETRAIN_EPOCHS
#   e.g. benchmarks/synthetic_transfer.sh runs/transfer syn-Scientific,syn-Office 3 10
set -euo pipefail
out=${1:?output folder}; targets=${2:-syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office}
seeds=${3:-3}; epochs=${4:-10}
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-missrec,missrec@scratch,sasrec,mostpop}
# The benchmark setting: the demo configs with dropout back on, longer training, patience 10.
$PYTHON pretrain/run.py --quiet --output "$out/pretrain" train.epochs="$epochs" model.dropout=0.1 ${PRETRAIN_ARGS:-}
# SASRec's dropout keys only when SASRec runs (a key no model has is an error).
sasrec_dropout=(); [[ ",$MODELS," == *",sasrec,"* ]] && sasrec_dropout=(model.hidden_dropout=0.2 model.attn_dropout=0.2)
$PYTHON -m finetune.cli --domain "$targets" --checkpoint "$out/pretrain/final" \
  --model "$MODELS" --seeds "$seeds" --output "$out/finetune" --quiet \
  train.epochs=30 train.patience=10 model.dropout=0.1 "${sasrec_dropout[@]}" ${FINETUNE_ARGS:-} \
  > "$out/finetune.log" 2>&1
tail -n 12 "$out/finetune.log"
