#!/usr/bin/env bash
# Pretrain MISSRec on the synthetic sources, then compare on synthetic targets: MISSRec
# (pretrained, PEFT), MISSRec (scratch), SASRec, MostPop, several seeds.
# Usage: [MODELS=...] [PRETRAIN_ARGS='key=value ...'] [FINETUNE_ARGS='key=value ...'] [SCALE=4]
#        benchmarks/synthetic_transfer.sh OUT_DIR TARGETS SEEDS PRETRAIN_EPOCHS
#   e.g. benchmarks/synthetic_transfer.sh runs/transfer syn-Scientific,syn-Office 3 10
# SCALE (default 1) generates the corpus with `mmseqrec prepare synthetic --scale SCALE` into
# data/synthetic-x<SCALE> (users and items of every domain multiplied; at scale 1 the targets
# have only 308-348 test users) and pretrains and fine-tunes on that copy.
set -euo pipefail
out=${1:?output folder}; targets=${2:-syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office}
seeds=${3:-3}; epochs=${4:-10}
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-missrec,missrec@scratch,sasrec,mostpop}
SCALE=${SCALE:-1}
data_pretrain=(); data_finetune=()
if [[ "$SCALE" != "1" ]]; then
  data_dir="data/synthetic-x$SCALE"
  $PYTHON -m mmseqrec.cli prepare synthetic --scale "$SCALE" --data-dir "$data_dir" > /dev/null
  data_pretrain=(data.data_dir="$data_dir"); data_finetune=(--data-dir "$data_dir")
fi
# The benchmark setting: the demo configs with dropout back on, longer training, patience 10.
$PYTHON pretrain/run.py --quiet --output "$out/pretrain" train.epochs="$epochs" model.dropout=0.1 "${data_pretrain[@]}" ${PRETRAIN_ARGS:-}
# SASRec's dropout keys only when SASRec runs (a key no model has is an error).
sasrec_dropout=(); [[ ",$MODELS," == *",sasrec,"* ]] && sasrec_dropout=(model.hidden_dropout=0.2 model.attn_dropout=0.2)
$PYTHON -m finetune.cli --domain "$targets" --checkpoint "$out/pretrain/final" "${data_finetune[@]}" \
  --model "$MODELS" --seeds "$seeds" --output "$out/finetune" --quiet \
  train.epochs=30 train.patience=10 model.dropout=0.1 "${sasrec_dropout[@]}" ${FINETUNE_ARGS:-} \
  > "$out/finetune.log" 2>&1
tail -n 12 "$out/finetune.log"
