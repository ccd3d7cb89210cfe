#!/usr/bin/env bash
# Install the classical registration tools the benchmarks compare against into the project's
# virtual environment. They are benchmark-only dependencies: the library never imports them.
#   ANTs SyN  : antspyx      (pip install antspyx)
#   elastix   : itk-elastix  (pip install itk-elastix; pulls itk)
#   ConvexAdam: convexadam   (pip install convexadam; torch-based)
# Usage: bash benchmarks/setup.sh [path/to/venv]   (default: .venv at the repository root)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "setup.sh: no python at $PY (create the venv with scripts/setup.sh first)" >&2
    exit 1
fi
# Note: antspyx 0.6.x pins numpy<2.4 and scipy<1.16, so pip may downgrade those two packages in
# the venv (both stay inside deepsim's supported ranges). scipy and matplotlib are needed by the
# benchmark scripts themselves (Wilcoxon tests, figures).
"$PY" -m pip install --disable-pip-version-check "antspyx>=0.5" "itk-elastix>=0.20" "scipy>=1.10" \
    nibabel scikit-learn \
    "matplotlib>=3.7"
# --no-deps: convexadam requires a bare torch, which would replace the CPU build with a CUDA one
# (its other requirements, nibabel and scikit-learn, are installed above)
"$PY" -m pip install --disable-pip-version-check --no-deps "convexadam>=0.2"
"$PY" - <<'PY'
import ants
import itk
from convexAdam.convex_adam_MIND import convex_adam_pt  # noqa: F401

print("antspyx", ants.__version__)
print("itk", itk.Version.GetITKVersion(), "with elastix:", hasattr(itk, "ElastixRegistrationMethod"))
PY
