#!/usr/bin/env bash
# The main job on shipped defaults: register MNI152 2009a (held out of training) to fsaverage at
# 1 mm with the default 3D model; outputs and overview.png in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/make_demo_pair.py out/demo-input
.venv/bin/deepsim register out/demo-input/fixed.nii.gz out/demo-input/moving.nii.gz --out out/demo \
  --fixed-labels out/demo-input/fixed_labels.nii.gz --moving-labels out/demo-input/moving_labels.nii.gz "$@"
echo "see out/demo/overview.png and out/demo/summary.json"
