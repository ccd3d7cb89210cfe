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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, environment, md_table, write_json  # noqa: E402


def compare(model, pair: dict, grid) -> dict:
    """Endpoint error (mm, fixed foreground) and DeepSim of the network alone and of the default."""
    from deepsim.register import RegistrationOptions, register
    from deepsim.scoring import score_on_fixed_grid_mm
    from deepsim.training.evaluate import pair_images

    fixed, moving, fl, ml, true_mm = pair_images(pair, grid)
    out = {}
    for variant, io_steps in (("network", 0), ("default", None)):
        res = register(fixed, moving, model, RegistrationOptions(device="cpu", io_steps=io_steps))
        out[variant] = {
            "endpoint_error_mm": score_on_fixed_grid_mm(
                fl, ml, res.displacement, true_mm
            ).endpoint_error_mm,
            "deepsim": float(res.summary.similarity_deepsim_after),
        }
    by_epe = min(out, key=lambda v: out[v]["endpoint_error_mm"])
    by_deepsim = max(out, key=lambda v: out[v]["deepsim"])
    return {**out, "lower_epe": by_epe, "higher_deepsim": by_deepsim}


def phantom_pairs(seeds: list[int]) -> list[tuple[str, dict, object]]:
    from phantom_gate import phantom_grid, phantom_pair

    grid = phantom_grid()
    return [(f"phantom seed {seed}", phantom_pair(seed, grid), grid) for seed in seeds]


def brain_pairs(n: int) -> list[tuple[str, dict, object]]:
    from deepsim.training.datasets import make_source

    cfg = json.loads((ROOT / "configs" / "eval-mni2009a.json").read_text())
    source = make_source(cfg["data"], "test", int(cfg.get("seed", 0)))
    return [(f"mni2009a {i}", source.pair(i), source.grid) for i in range(n)]


def main(argv=None) -> int:
    from deepsim.api import resolve_model
    from deepsim.modelio import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phantom-seeds", nargs="*", type=int, default=[10, 11, 12, 13, 14])
    p.add_argument("--brain-pairs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "engine_arbiter.json")
    args = p.parse_args(argv)
    phantoms, brains = phantom_pairs(args.phantom_seeds), brain_pairs(args.brain_pairs)
    results = {}
    for name, pairs in (("general-3d", phantoms + brains), ("brain-3d", brains)):
        model = load_model(resolve_model(name, 3), spatial_dims=3)
        results[name] = [{"pair": label, **compare(model, p, grid)} for label, p, grid in pairs]
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
