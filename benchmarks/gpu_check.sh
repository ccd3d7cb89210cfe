#!/usr/bin/env bash
# One call on a lent GPU machine: install (CPU torch is replaced by the machine's CUDA torch if it
# has one; otherwise pip brings the CUDA build), then run the checks. Prints PASS/FAIL and timings.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || pip install -q torch
pip install -q --no-deps -e . && pip install -q SimpleITK numpy
python3 benchmarks/gpu_check.py "$@"
