"""Peak memory of a whole ``deepsim register`` run (registration, output files, overview figure)
against the estimate the run checks before it starts.

Each case runs in a fresh subprocess (``ru_maxrss`` is per process): synthetic blob images on an
oblique, anisotropic grid -> :func:`deepsim.register.register` -> :func:`write_outputs` with and
without the figure. The model is a small random-init network (memory of the fixed-grid arrays,
which dominate large volumes, does not depend on the weights).

    python benchmarks/memory.py                     # this checkout
    python benchmarks/memory.py --deepsim /tmp/old/DeepSimRegistration   # another version
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = [  # fixed-grid shape (tensor order z, y, x) and spacing (x, y, z) mm
    ((64, 128, 128), (0.5, 0.5, 2.0)),
    ((96, 192, 192), (0.5, 0.5, 2.0)),
    ((128, 224, 224), (0.6, 0.6, 1.5)),
]

CHILD = r"""
import json, resource, sys, tempfile, time
import numpy as np
sys.path.insert(0, sys.argv[4])
from conftest import make_model_file
from deepsim.geometry import Grid, Image
from deepsim.modelio import load_model
from deepsim.outputs import write_outputs
from deepsim.register import RegistrationOptions, _estimate_bytes, register
from deepsim.geometry import model_grid

shape = tuple(json.loads(sys.argv[1])); spacing = json.loads(sys.argv[2]); figure = sys.argv[3] == "1"
m = np.eye(4)
c, s = np.cos(0.3), np.sin(0.3)
m[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing[::-1])
m[:3, 3] = [10.0, -20.0, 5.0]
grid = Grid(shape, m)
idx = np.indices(shape, dtype=np.float32)
ctr = np.array(shape, np.float32)[:, None, None, None] / 2
blob = lambda shift: np.exp(-(((idx - ctr - shift) / (ctr / 2)) ** 2).sum(0)).astype(np.float32)
fixed = Image(blob(0.0) * 100, grid)
moving = Image(blob(2.0) * 100, grid)
del idx
tmp = tempfile.mkdtemp()
model = load_model(make_model_file(tmp + "/m.pt", 3, spacing=2.0))
opts = RegistrationOptions(device="cpu", io_steps=0)
pre = model.preprocessing  # a dict in older versions, typed settings in newer ones
get = pre.__getitem__ if isinstance(pre, dict) else lambda key: getattr(pre, key)
mg = model_grid(grid, get("spacing"), get("multiple"), get("orientation"), get("max_voxels"))
estimate = _estimate_bytes(model, mg, grid, 0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
result = register(fixed, moving, model, opts)
write_outputs(result, tmp + "/out", moving=moving, fixed=fixed, figure=figure)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "estimate": estimate, "s": time.perf_counter() - t}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deepsim", type=Path, default=ROOT / "DeepSimRegistration")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.deepsim), "OMP_NUM_THREADS": "2"}
    print(f"deepsim from {args.deepsim}")
    print(
        f"{'fixed grid (x y z)':<22} {'spacing mm':<16} {'figure':<7} {'peak GB':>8} "
        f"{'above start':>12} {'estimate':>9} {'est/used':>9} {'s':>6}"
    )
    with tempfile.TemporaryDirectory():
        for shape, spacing in CASES:
            for figure in (False, True):
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        json.dumps(shape),
                        json.dumps(spacing),
                        "1" if figure else "0",
                        str(ROOT / "Testing" / "Python"),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=1800,
                )
                if proc.returncode != 0:
                    print(f"{shape}: failed: {proc.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                used = r["peak"] - r["base"]
                size = " x ".join(map(str, shape[::-1]))
                sp = " x ".join(f"{v:g}" for v in spacing)
                print(
                    f"{size:<22} {sp:<16} {'yes' if figure else 'no':<7} {r['peak'] / 2**30:>8.2f} "
                    f"{used / 2**30:>12.2f} {r['estimate'] / 2**30:>9.2f} "
                    f"{r['estimate'] / used:>9.2f} {r['s']:>6.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
