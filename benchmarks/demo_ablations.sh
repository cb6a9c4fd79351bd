#!/usr/bin/env bash
# Ablations around the demo configuration: each row changes one setting of pretrain/configs/demo.yaml
# and of the synthetic fine-tuning defaults, pretrains once on the synthetic sources and fine-tunes
# pretrained MISSRec (PEFT, seed 2020) on the five synthetic targets; then one table.
#
#   bash benchmarks/demo_ablations.sh [OUT]        # default runs/demo-ablations; resumes what is unfinished
#
# ROWS (default: all below) picks rows by name. The unchanged configuration, with MISSRec from
# scratch and SASRec beside it, is the row "demo-config". THREADS (default 1) per run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-runs/demo-ablations}
ROWS=${ROWS:-demo-config masked_mean no_reg one_interest text_image text_image_static linear dec1}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
TARGETS=syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office

declare -A OVERRIDE=(
  [demo-config]="" [masked_mean]="model.reg_formula=masked_mean" [no_reg]="model.reg_weight=0.0"
  [one_interest]="model.interest_ratio=0.000001" [text_image]="model.modalities=text+image"
  [text_image_static]="model.modalities=text+image model.fusion=static" [linear]="model.adapter=linear"
  [dec1]="model.num_decoder_layers=1"
)
declare -A LABEL=(
  [demo-config]="demo configuration" [masked_mean]="regulariser: masked mean (gamma 2.0)"
  [no_reg]="no regulariser (gamma 0)" [one_interest]="one interest token (K = 1, interests off)"
  [text_image]="text + image (dynamic fusion)" [text_image_static]="text + image, static fusion"
  [linear]="linear adapters (the paper's)" [dec1]="one decoder layer (the paper's)"
)
table=()
for row in $ROWS; do
  [[ -v "OVERRIDE[$row]" ]] || { echo "unknown row '$row' (rows: ${!OVERRIDE[*]})" >&2; exit 2; }
  overrides=(${OVERRIDE[$row]})
  resume=(); [ -d "$OUT/$row/pretrain/state" ] && resume=(--resume)
  [ -f "$OUT/$row/pretrain/final/config.json" ] ||
    $PYTHON pretrain/run.py --quiet --output "$OUT/$row/pretrain" "${resume[@]}" "${overrides[@]}"
  models=missrec; [ "$row" = demo-config ] && models=missrec,missrec@scratch,sasrec
  $PYTHON -m finetune.cli --domain "$TARGETS" --checkpoint "$OUT/$row/pretrain/final" --model "$models" \
    --quiet --output "$OUT/$row/ft" --resume "$OUT/$row/ft" "${overrides[@]}" > "$OUT/$row.finetune.log" 2>&1
  table+=("${LABEL[$row]}=$OUT/$row/ft")
done
[[ " $ROWS " == *" demo-config "* ]] && table+=("MISSRec from scratch=$OUT/demo-config/ft:missrec (scratch)" "SASRec=$OUT/demo-config/ft:sasrec")
$PYTHON benchmarks/transfer_table.py "${table[@]}"
