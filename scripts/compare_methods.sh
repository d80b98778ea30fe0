#!/usr/bin/env bash
# One multi-task run per PEFT method at the same (small, CPU-sized) budget on ../shared/data,
# then results/methods/<method>/{metrics,ledger}.json and results/methods/summary.md.
#   bash scripts/compare_methods.sh [DATA_DIR] [BACKBONE] [OUT_DIR] [METHODS...]
# The budget is set by the env vars below; the defaults are what results/methods used.
# Needs `mtpeft` on PATH (`. .venv/bin/activate` after `make test` or `make demo`).
set -euo pipefail
DATA=${1:-../shared/data}
BACKBONE=${2:-default}
OUT=${3:-results/methods}
shift $(( $# > 3 ? 3 : $# )) || true
METHODS=${*:-full lora serial_adapter parallel_adapter prefix ia3}
TRAIN=${TRAIN:-256}; EPOCHS=${EPOCHS:-2}; EVAL=${EVAL:-300}; VALID=${VALID:-150}; MAXLEN=${MAXLEN:-128}; LR=${LR:-3e-4}
mkdir -p "$OUT"
for method in $METHODS; do
  run=runs/methods-$(basename "$OUT")/$method
  cmd=(mtpeft train --config configs/full.yaml --data "$DATA" --backbone "$BACKBONE" --method "$method"
       --max-len "$MAXLEN" --max-train-per-task "$TRAIN" --epochs "$EPOCHS" --lr "$LR"
       --max-eval-per-task "$EVAL" --max-valid-per-task "$VALID" --output "$run" --overwrite --no-progress
       --set 'tasks.search.extra={}')  # no CoSQA here: its whole 6,267-code corpus is re-encoded per run
  echo "== ${cmd[*]}"
  "${cmd[@]}"
  mkdir -p "$OUT/$method"
  cp "$run"/{metrics.json,ledger.json,config.yaml,command.txt,README.md} "$OUT/$method/"
done
# every finished method in OUT (so the comparison can be completed a few methods at a time)
runs=()
for dir in "$OUT"/*/; do if [ -f "$dir/metrics.json" ]; then runs+=("${dir%/}"); fi; done
{
  echo "# PEFT methods, multi-task, backbone \`$BACKBONE\`"
  echo
  echo "Budget (same for every method): max_len $MAXLEN, $TRAIN training examples per task, $EPOCHS epochs,"
  echo "lr $LR, test sets capped at $EVAL examples (queries) per set, validation at $VALID; CoSQA left out."
  echo "Command (each method's own command line is in its command.txt):"
  echo "\`TRAIN=$TRAIN EPOCHS=$EPOCHS EVAL=$EVAL VALID=$VALID MAXLEN=$MAXLEN LR=$LR OMP_NUM_THREADS=1 bash scripts/compare_methods.sh $DATA $BACKBONE $OUT METHOD...\`"
  echo
  mtpeft report "${runs[@]}"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
