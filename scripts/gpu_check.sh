#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU (H100/H200). Usage: bash scripts/gpu_check.sh [WHEEL_DIR]
# Installs from the wheels in WHEEL_DIR when given (no network needed), otherwise from the registry,
# then runs benchmarks/gpu_check.py (bf16 training steps of a BERT-base + ViT-base TransRec model,
# random weights, and exact full ranking of 1M items x 10k users). Results: $OUT/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then
  python -m pip install --quiet --no-index --find-links "$1" -e .
else
  python -m pip install --quiet -e .
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
export HF_HUB_OFFLINE=1 OUT="${OUT:-.}"
python benchmarks/gpu_check.py --steps 20 --batch 32 --max-len 20
