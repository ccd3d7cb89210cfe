"""Which field should a registration keep: the network's alone, or the engine's after it?

The engine (MIND + diffusion) keeps its field whenever it lowers its own loss, so it cannot tell
when it makes the network's field worse (as on random-shape phantoms). The judge
(``RegistrationOptions.deepsim_judge``) then keeps whichever of the two fields the model's own
DeepSim similarity rates higher, a similarity the engine does not optimise. Per pair this
registers with the network alone (``io_steps = 0``), with the engine's field always kept
(``deepsim_judge = False``) and with the judge (``deepsim_judge = True``), and reports each one's
endpoint error, the two DeepSim ratings and whether the judge kept the field of lower endpoint
error. Models in :data:`deepsim.presets.DEEPSIM_JUDGE` judge by default, the others keep the
engine's field.

Pairs, never used by a gate or for training: for 3D models random-shape phantoms of validation
seeds (as in :mod:`phantom_gate`) and semi-synthetic pairs of the held-out MNI 2009a
(``configs/eval-mni2009a.json``); for 2D models the held-out pairs of
``configs/eval-mni2009a-2d.json`` and ``configs/eval-microscopy-2d.json``.

Usage::

    python benchmarks/engine_arbiter.py [--models general-3d brain-3d brain-3d-ae general-2d]
        [--phantom-seeds 10 11 12 13 14] [--brain-pairs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, environment, md_table, write_json  # noqa: E402

VARIANTS = {
    "network": {"io_steps": 0},
    "engine": {"deepsim_judge": False},
    "judge": {"deepsim_judge": True},
}


def compare(model, pair: dict, grid) -> dict:
    """Endpoint error (mm, fixed foreground) of each of :data:`VARIANTS`, and the judge's
    DeepSim ratings of the network's and the engine's fields."""
    from deepsim.register import RegistrationOptions, register
    from deepsim.scoring import score_on_fixed_grid_mm
    from deepsim.training.evaluate import pair_images

    fixed, moving, fl, ml, true_mm = pair_images(pair, grid)
    out = {}
    for variant, options in VARIANTS.items():
        opts = RegistrationOptions(device="cpu", heatmaps=False, warped=False, **options)
        res = register(fixed, moving, model, opts)
        out[variant] = score_on_fixed_grid_mm(fl, ml, res.displacement, true_mm).endpoint_error_mm
    rated = res.summary.deepsim_judge
    return {
        "endpoint_error_mm": out,
        "deepsim": rated,
        "kept": res.summary.engine_kept,
        "lower_epe": min(("network", "engine"), key=out.get),
    }


def phantom_pairs(seeds: list[int]) -> list[tuple[str, dict, object]]:
    from phantom_gate import phantom_grid, phantom_pair

    grid = phantom_grid()
    return [(f"phantom seed {seed}", phantom_pair(seed, grid), grid) for seed in seeds]


def eval_pairs(config: str, n: int) -> list[tuple[str, dict, object]]:
    """The first ``n`` test pairs of a held-out data config."""
    from deepsim.training.datasets import make_source

    cfg = json.loads((ROOT / "configs" / config).read_text())
    source = make_source(cfg["data"], "test", int(cfg.get("seed", 0)))
    name = config.removeprefix("eval-").removesuffix(".json")
    return [(f"{name} {i}", source.pair(i), source.grid) for i in range(n)]


def main(argv=None) -> int:
    from deepsim.api import catalogue, resolve_model
    from deepsim.modelio import load_model
    from deepsim.presets import DEEPSIM_JUDGE

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models", nargs="*", default=["general-3d", "brain-3d", "brain-3d-ae", "general-2d"]
    )
    p.add_argument("--phantom-seeds", nargs="*", type=int, default=[10, 11, 12, 13, 14])
    p.add_argument("--brain-pairs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "engine_arbiter.json")
    args = p.parse_args(argv)
    pairs = {
        3: phantom_pairs(args.phantom_seeds) + eval_pairs("eval-mni2009a.json", args.brain_pairs),
        2: eval_pairs("eval-mni2009a-2d.json", args.brain_pairs)
        + eval_pairs("eval-microscopy-2d.json", len(args.phantom_seeds)),
    }
    results = {}
    for name in args.models:
        entry = catalogue()[name]
        model = load_model(resolve_model(name, entry.spatial_dims))
        results[name] = [
            {"pair": label, **compare(model, p, grid)}
            for label, p, grid in pairs[model.spatial_dims]
        ]
    table = [
        [name, r["pair"]]
        + [f"{r['endpoint_error_mm'][v]:.3f}" for v in VARIANTS]
        + [f"{r['deepsim'][v]:.4f}" for v in ("network", "engine")]
        + [r["kept"], r["lower_epe"], "yes" if r["kept"] == r["lower_epe"] else "no"]
        for name, rows in results.items()
        for r in rows
    ]
    header = ["model", "pair"] + [f"EPE {v} mm" for v in VARIANTS]
    header += ["DeepSim network", "DeepSim engine", "kept", "lower EPE", "right"]
    print(md_table(header, table))
    right = sum(row[-1] == "yes" for row in table)
    print(
        f"\nthe DeepSim judge keeps the field of lower endpoint error on {right} of {len(table)} pairs"
    )
    for name, rows in results.items():
        means = {v: sum(r["endpoint_error_mm"][v] for r in rows) / len(rows) for v in VARIANTS}
        default = "judge" if name in DEEPSIM_JUDGE else "engine"
        print(
            f"{name}: mean EPE "
            + ", ".join(f"{v} {m:.3f} mm" for v, m in means.items())
            + f"; its default: {default}"
        )
    write_json(
        args.out,
        {"environment": environment(), "results": results, "right": right, "pairs": len(table)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
