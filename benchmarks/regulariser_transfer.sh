#!/usr/bin/env bash
# Which interest regulariser transfers better? Pretrain MISSRec on Toys (MiniLM text, the
# architecture of pretrain/configs/amazon-text.yaml) once per form (reference, masked_mean, and
# none: gamma 0), then fine-tune each checkpoint with PEFT (inductive) on the Scientific subset,
# several seeds. The decision is read off valid NDCG@10; test is reported beside it.
# PEFT trains no parameter the regulariser reaches, so the forms differ only through pretraining.
#
#   bash benchmarks/regulariser_transfer.sh                 # docs/results/regulariser-transfer/
#   EPOCHS=1 SEEDS=1 SOURCE=Office bash benchmarks/regulariser_transfer.sh   # a quicker look
#
# Environment: DATA_DIR (prepared domains, with text_minilm features; default data/processed),
# SOURCE (Toys), TARGET (Scientific), EPOCHS (pretraining epochs, 2), SEEDS (3), OUTPUT (the
# fine-tuning runs), CHECKPOINTS (the pretrained models).
# Running it again resumes what is unfinished.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-data/processed}
SOURCE=${SOURCE:-Toys}
TARGET=${TARGET:-Scientific}
EPOCHS=${EPOCHS:-2}
SEEDS=${SEEDS:-3}
OUTPUT=${OUTPUT:-docs/results/regulariser-transfer}
CHECKPOINTS=${CHECKPOINTS:-checkpoints/pretrain/regulariser-transfer}

for form in reference masked_mean none; do
  case $form in
    none) reg=(model.reg_weight=0.0) ;;
    *) reg=(model.reg_formula=$form) ;;
  esac
  pretrained="$CHECKPOINTS/$form"
  resume=(); [ -d "$pretrained/state" ] && resume=(--resume)
  $PYTHON pretrain/run.py --config pretrain/configs/amazon-text.yaml --data-dir "$DATA_DIR" --output "$pretrained" \
    --quiet "${resume[@]}" "data.domains=[$SOURCE]" train.epochs="$EPOCHS" train.checkpoint_every=200 "${reg[@]}"
  runs="$OUTPUT/$form/finetune"
  resume=(); [ -d "$runs" ] && resume=(--resume "$runs")
  $PYTHON -m finetune.cli --domain "$TARGET" --data-dir "$DATA_DIR" --checkpoint "$pretrained/final" --model missrec \
    --mode inductive --seeds "$SEEDS" --output "$runs" "${resume[@]}" --quiet \
    train.group_by_length=true model.dropout=0.1 model.feature_dropout=0.2
done
for form in reference masked_mean none; do echo "== $form"; cat "$OUTPUT/$form/finetune/results.md"; done
