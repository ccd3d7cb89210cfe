#!/usr/bin/env bash
# Train a shipped model from scratch: its DeepSim feature extractor (configs/NAME-extractor.json),
# then its registration network (configs/NAME.json), then copy it into
# DeepSimRegistration/deepsim/models/NAME.pt. Rerunning resumes from the checkpoints in runs/.
#   usage: scripts/train_model.sh NAME [extra 'deepsim train' arguments]
#   e.g.   scripts/train_model.sh general-2d;  scripts/train_model.sh brain-3d
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"
shift
deepsim train "configs/${name}-extractor.json" "$@"
deepsim train "configs/${name}.json" "$@"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
"$PY" scripts/ship_model.py "runs/${name}/registration/model.pt" "DeepSimRegistration/deepsim/models/${name}.pt"
