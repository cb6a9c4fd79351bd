#!/usr/bin/env bash
# Every synthetic target with the given models and seeds; one results.md per target, then one
# combined table. Usage: benchmarks/synthetic_targets.sh OUT_DIR MODELS SEEDS [finetune args...]
set -euo pipefail
out=${1:?output folder}; models=${2:-sasrec,mostpop}; seeds=${3:-3}; shift 3 || true
FINETUNE=${FINETUNE:-finetune}
for target in Scientific Pantry Instruments Arts Office; do
  $FINETUNE --domain "syn-$target" --model "$models" --seeds "$seeds" --output "$out/syn-$target" --quiet "$@" >/dev/null
  echo "== syn-$target"; tail -n +3 "$out/syn-$target/results.md"
done | tee "$out/all.md"
