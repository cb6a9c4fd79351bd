#!/usr/bin/env bash
# The cold-start table (docs/cold-start.md): inductive MISSRec and UniSRec (from scratch, content
# only) against SASRec and MostPop on cold-start splits of Scientific and Toys (a share of the
# items held out of training: `mmseqrec prepare cold`), several seeds, length-grouped batches.
# Every run reports its test metrics on all rows, the cold rows (target held out of training) and
# the warm ones. Hours on the 2-core CPU; running it again resumes the unfinished runs.
#
#   bash benchmarks/cold_start.sh                        # the table, in docs/results/cold-start/
#   DOMAINS=syn-Office DATA_DIR=/tmp/d SEEDS=1 OUTPUT=/tmp/cold bash benchmarks/cold_start.sh train.epochs=1   # a quick check
#
# Environment: DATA_DIR (prepared domains; default data/processed), DOMAINS (default "Scientific
# Toys"; those two are prepared from ../shared/data when missing, any other must be prepared),
# SHARE (0.1), COLD_SEED (0), SEEDS (3), MODELS, OUTPUT, MMSEQREC / FINETUNE (the commands).
# Further arguments are key=value overrides for every run.
set -euo pipefail
cd "$(dirname "$0")/.."

MMSEQREC=${MMSEQREC:-mmseqrec}
FINETUNE=${FINETUNE:-finetune}
DATA_DIR=${DATA_DIR:-data/processed}
DOMAINS=${DOMAINS:-"Scientific Toys"}
SHARE=${SHARE:-0.1}
COLD_SEED=${COLD_SEED:-0}
SEEDS=${SEEDS:-3}
MODELS=${MODELS:-missrec@scratch,unisrec@scratch,sasrec,mostpop}
OUTPUT=${OUTPUT:-docs/results/cold-start}
SHARED=${SHARED:-../shared/data}
declare -A RELEASE=([Scientific]=amazon2018-scientific-mm-subset [Toys]=amazon2014-toys-mm)

for domain in $DOMAINS; do
  if [ ! -f "$DATA_DIR/$domain/manifest.json" ]; then
    if [ -z "${RELEASE[$domain]:-}" ]; then
      echo "error: $DATA_DIR/$domain is not prepared (only Scientific and Toys are prepared here)" >&2
      exit 2
    fi
    $MMSEQREC prepare release --path "$SHARED/${RELEASE[$domain]}" --name "$domain" --data-dir "$DATA_DIR"
  fi
  if [ ! -f "$DATA_DIR/$domain-cold/manifest.json" ]; then
    $MMSEQREC prepare cold --domain "$domain" --share "$SHARE" --seed "$COLD_SEED" --name "$domain-cold" --data-dir "$DATA_DIR"
  fi
  runs="$OUTPUT/$domain-cold"
  resume=()
  if [ -d "$runs" ]; then resume=(--resume "$runs"); fi
  # --mode inductive applies to MISSRec and UniSRec: content only, so they can rank a cold item.
  $FINETUNE --domain "$domain-cold" --data-dir "$DATA_DIR" --model "$MODELS" --mode inductive --seeds "$SEEDS" \
    --output "$runs" "${resume[@]}" --quiet train.group_by_length=true "$@"
done

table="$OUTPUT/cold-start.md"
{
  echo "# Cold start: test metrics on all, cold and warm rows"
  echo
  echo "Command: bash benchmarks/cold_start.sh $*  (DOMAINS=\"$DOMAINS\" SHARE=$SHARE SEEDS=$SEEDS)"
  for domain in $DOMAINS; do
    echo
    echo "## $domain-cold"
    echo
    cat "$OUTPUT/$domain-cold/results.md"
  done
} > "$table.tmp"
mv "$table.tmp" "$table"
echo "table: $table"
