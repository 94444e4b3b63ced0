#!/usr/bin/env bash
# The GPU run, ready for a machine with CUDA (issue 16):
#   bash bench/gpu.sh          # CUDA: the cuda-marked tests, then one JSON line of figures (bench/gpu_report.py)
#   bash bench/gpu.sh --cpu    # the CPU fallback (also what runs without CUDA): tiny preset, few steps, < 1 minute
# Installs what it needs: a .venv with the project (pip install -e ".[dev]"; torch==2.13.0 from PyPI is a
# CUDA build on a Linux x86-64 GPU machine) when .venv is missing. The cuda tests live in bench/cuda_tests/,
# outside the suite's testpaths, so the CPU-only CI never collects (or skips) them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROMPTEHR_SHARED_DATA=${PROMPTEHR_SHARED_DATA:-$(cd .. && pwd)/shared/data}

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
fi
py=.venv/bin/python

mode=cuda
if [ "${1:-}" = "--cpu" ] || ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  mode=cpu
fi

if [ "$mode" = cuda ]; then
  "$py" -m pytest -q -p no:cacheprovider -m cuda bench/cuda_tests >&2
  "$py" bench/gpu_report.py
else
  OMP_NUM_THREADS=1 "$py" bench/gpu_report.py --cpu
fi
