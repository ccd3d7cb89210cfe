#!/usr/bin/env bash
# Train one shipped model at the DeepSim paper's widths on a GPU, in one call of at most ~9 min,
# writing everything under $OUT (for a session lent a GPU; the CPU recipes stay in configs/).
#   usage: OUT=/some/dir scripts/gpu_train.sh NAME        (NAME: general-2d, general-3d, brain-3d, brain-3d-ae)
# Widths (docs: deepsim-paper.md 2.5): registration and extractor U-Nets 32/64/128 in 3D,
# 64/128/256 in 2D. Budget: extractor <= 200 s, registration <= 300 s (each also capped by
# STEPS); each run keeps its best validation checkpoint as model.pt, so a timeout still leaves
# weights. Then: $OUT/NAME.pt is shipped-format (scripts/ship_model.py) and the gates are printed
# by the commands at the end. Size: a 2D model at these widths is ~27 MB, a 3D one ~9 MB; the shipped
# total must stay < 30 MB, so check before shipping. Smoke test on a CPU: DEVICE=cpu STEPS=2 OUT=/tmp/g scripts/gpu_train.sh general-2d
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"
out="${OUT:?set OUT to the output folder}"
device="${DEVICE:-cuda}"
steps="${STEPS:-4000}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD/DeepSimRegistration${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out/configs"
"$PY" - "$name" "$out" "$steps" <<'PYEOF'
import json, sys
from pathlib import Path
name, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for suffix in ("-extractor", ""):
    cfg = json.loads(Path(f"configs/{name}{suffix}.json").read_text())
    dims = cfg["spatial_dims"]
    cfg["network"]["channels"] = [64, 128, 256] if dims == 2 else [32, 64, 128]
    cfg["optim"].update(steps=steps, val_every=max(1, min(250, steps)), batch_size=max(cfg["optim"]["batch_size"], 2 if dims == 3 else 8))
    if cfg["optim"].pop("init", None):  # CPU fine-tuning starts from narrower shipped weights
        cfg["optim"]["lr"] = 1e-3  # from scratch: general-3d's rate
    cfg["out"] = str(out / ("extractor" if suffix else "registration"))
    if not suffix:
        cfg["loss"]["extractor"] = str(out / "extractor" / "model.pt")
    (out / "configs" / f"{name}{suffix}.json").write_text(json.dumps(cfg, indent=2))
PYEOF
timeout 200 "$PY" -m deepsim train "$out/configs/${name}-extractor.json" --device "$device" || [ -f "$out/extractor/model.pt" ]
timeout 300 "$PY" -m deepsim train "$out/configs/${name}.json" --device "$device" || [ -f "$out/registration/model.pt" ]
"$PY" scripts/ship_model.py "$out/registration/model.pt" "$out/${name}.pt"
echo "gates: DEEPSIM_MODELS=$out $PY benchmarks/extractor_gate.py --models $name;"
echo "       DEEPSIM_MODELS=$out $PY benchmarks/phantom_gate.py --models $name (3D) or benchmarks/heldout_gate.py $out/${name}.pt configs/eval-*.json"
