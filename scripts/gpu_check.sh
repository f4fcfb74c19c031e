#!/usr/bin/env bash
# GPU speed check (issue 5 "GPU speed"): one EGSPO-SA iteration at the LLaDA-8B shape with random weights (no download),
# live-LoRA vs merged rollouts, the update, T bare forwards and K bare forward+backward passes, plus 2 iterations of
# the real trainer on a tiny LoRA model on the same GPU. About 3-5 minutes on one H100 (80 GB); prints one JSON object
# and a summary line, and writes $OUT/gpu_check.json when OUT is set.
#   bash scripts/gpu_check.sh                 # on a GPU machine
#   bash scripts/gpu_check.sh --shape tiny    # smoke test of the same code at a toy size (any device, CPU too)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
args=("$@")
if [ -n "${OUT:-}" ]; then args+=(--out "$OUT/gpu_check.json"); fi
exec "$PY" scripts/gpu_check.py "${args[@]}"
