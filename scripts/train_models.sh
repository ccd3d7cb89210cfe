#!/usr/bin/env bash
# Train a shipped model from scratch: its feature extractor, then its registration network, then
# copy the result into DeepSimRegistration/Resources/Models/. Rerunning resumes from checkpoints.
#   usage: scripts/train_models.sh NAME EXTRACTOR [extra deepsim-train args]
#   e.g.   scripts/train_models.sh general-2d ae;  scripts/train_models.sh brain-3d seg
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; extractor="$2"; shift 2
deepsim train "configs/${name}-${extractor}-extractor.json" "$@"
deepsim train "configs/${name}.json" "$@"
python scripts/ship_model.py "runs/${name}/registration/model.pt" "DeepSimRegistration/Resources/Models/${name}.pt"
