"""Which field should a registration keep: the network's alone, or the engine's after it?

The engine (MIND + diffusion) keeps its field whenever it lowers its own loss, so it cannot tell
when it makes the network's field worse (as on random-shape phantoms). This measures a candidate
arbiter that the engine does not optimise: the model's own DeepSim similarity between the fixed
image and the warped moving image (``summary.similarity_deepsim_after``). Per pair it registers
with the network alone (``io_steps = 0``) and with the default (network + engine), and reports
each one's endpoint error and DeepSim, and whether keeping the field of higher DeepSim would have
kept the one of lower endpoint error.

Pairs, never used by a gate or for training: random-shape phantoms of validation seeds (as in
:mod:`phantom_gate`) for general-3d, and semi-synthetic pairs of the held-out MNI 2009a
(``configs/eval-mni2009a.json``) for general-3d and brain-3d.

Usage::

    python benchmarks/engine_arbiter.py [--phantom-seeds 10 11 12 13 14] [--brain-pairs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, environment, md_table, write_json  # noqa: E402


def compare(model, fixed, moving, true_mm: np.ndarray, inside: np.ndarray) -> dict:
    """Endpoint error (mm, over ``inside``) and DeepSim of the network alone and of the default."""
    from deepsim.register import RegistrationOptions, register

    out = {}
    for variant, io_steps in (("network", 0), ("default", None)):
        res = register(fixed, moving, model, RegistrationOptions(device="cpu", io_steps=io_steps))
        epe = np.linalg.norm(res.displacement - true_mm, axis=-1)[inside].mean()
        out[variant] = {
            "endpoint_error_mm": float(epe),
            "deepsim": float(res.summary.similarity_deepsim_after),
        }
    by_epe = min(out, key=lambda v: out[v]["endpoint_error_mm"])
    by_deepsim = max(out, key=lambda v: out[v]["deepsim"])
    return {**out, "lower_epe": by_epe, "higher_deepsim": by_deepsim}


def phantom_rows(model, seeds: list[int]) -> list[dict]:
    from phantom_gate import phantom_grid, phantom_pair

    from deepsim.geometry import Image

    grid = phantom_grid()
    rows = []
    for seed in seeds:
        p = phantom_pair(seed, grid)
        fixed, moving = (Image(p[k][0, 0].numpy(), grid) for k in ("fixed", "moving"))
        true_mm = np.moveaxis(p["disp"][0].numpy(), 0, -1) @ grid.linear.T
        inside = p["fixed_labels"][0, 0].numpy() > 0
        rows.append(
            {"pair": f"phantom seed {seed}", **compare(model, fixed, moving, true_mm, inside)}
        )
    return rows


def brain_rows(model, n: int) -> list[dict]:
    from deepsim.geometry import Image
    from deepsim.training.datasets import make_source

    cfg = json.loads((ROOT / "configs" / "eval-mni2009a.json").read_text())
    source = make_source(cfg["data"], "test", int(cfg.get("seed", 0)))
    rows = []
    for i in range(n):
        p = source.pair(i)
        fixed, moving = (
            Image(p[k][0, 0].numpy().astype(np.float32), source.grid) for k in ("fixed", "moving")
        )
        true_mm = np.moveaxis(p["disp"][0].numpy(), 0, -1) @ source.grid.linear.T
        inside = p["fixed_labels"][0, 0].numpy() > 0
        rows.append({"pair": f"mni2009a {i}", **compare(model, fixed, moving, true_mm, inside)})
    return rows


def main(argv=None) -> int:
    from deepsim.api import resolve_model
    from deepsim.modelio import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phantom-seeds", nargs="*", type=int, default=[10, 11, 12, 13, 14])
    p.add_argument("--brain-pairs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "engine_arbiter.json")
    args = p.parse_args(argv)
    results = {}
    for name, sets in (("general-3d", ("phantom", "brain")), ("brain-3d", ("brain",))):
        model = load_model(resolve_model(name, 3), spatial_dims=3)
        rows = phantom_rows(model, args.phantom_seeds) if "phantom" in sets else []
        results[name] = rows + brain_rows(model, args.brain_pairs)
    table = [
        [name, r["pair"]]
        + [f"{r[v]['endpoint_error_mm']:.3f}" for v in ("network", "default")]
        + [f"{r[v]['deepsim']:.4f}" for v in ("network", "default")]
        + [
            r["lower_epe"],
            r["higher_deepsim"],
            "yes" if r["lower_epe"] == r["higher_deepsim"] else "no",
        ]
        for name, rows in results.items()
        for r in rows
    ]
    header = ["model", "pair", "EPE network mm", "EPE default mm", "DeepSim network"]
    header += ["DeepSim default", "lower EPE", "higher DeepSim", "DeepSim picks it"]
    print(md_table(header, table))
    right = sum(row[-1] == "yes" for row in table)
    print(
        f"\nkeeping the field of higher DeepSim keeps the lower endpoint error on {right} of {len(table)} pairs"
    )
    write_json(
        args.out,
        {"environment": environment(), "results": results, "right": right, "pairs": len(table)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
