"""Choose the engine's default similarity and regularisation on VALIDATION pairs.

Pairs: :func:`deepsim.training.benchdata.semi_synthetic_pairs` of the fsaverage template (the training
anatomy, never the held-out MNI 2009a test template), drawn with the benchmark's intensity model
(:data:`deepsim.training.benchdata.BENCH_CONFIG`) and a validation seed that the benchmark does not use.
Each candidate runs the training-free engine (:func:`deepsim.engine.optimise`, the automatic
masks, as ``register()`` runs it) on the 2 mm grid; the table reports the mean endpoint
error (mm) inside the brain, the worst folding % and the time per pair.

Usage::

    python benchmarks/engine_validation.py --dims 2 --pairs 3
    python benchmarks/engine_validation.py --dims 3 --pairs 2 --only "mind*3, reg 10" "ncc, reg 1"
    python benchmarks/engine_validation.py --dims 3 --pairs 4 --preset recommended \
        --only "mind*3, reg 10" "mind*3, reg 10, whole field" --out results/engine_validation_3d_field.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment, write_json  # noqa: E402

VALIDATION_SEED = 7  # fsaverage pairs: the benchmark's test pairs are mni2009a ones
LEVELS = ((4, 60, 0.5), (2, 40, 0.4), (1, 20, 0.3))  # shrink, steps, lr (smoothing 2) as tuned
CANDIDATES = {
    "ncc, reg 0.5, smooth 1": {
        "similarity": (("ncc", 1.0),),
        "regularization": 0.5,
        "smooth": 1.0,
    },
    "ncc, reg 10": {"similarity": (("ncc", 1.0),), "regularization": 10.0},
    "mind*3, reg 10": {"similarity": (("mind", 3.0),), "regularization": 10.0},
    "mind*3, reg 3": {"similarity": (("mind", 3.0),), "regularization": 3.0},
    "mind*3, reg 5": {"similarity": (("mind", 3.0),), "regularization": 5.0},
    "mind*3, reg 20": {"similarity": (("mind", 3.0),), "regularization": 20.0},
    # with --preset recommended: its levels as they were before the 1/2 level's update moved to a
    # grid twice as coarse
    "mind*3, reg 10, 1/2 update at full level resolution": {
        "similarity": (("mind", 3.0),),
        "regularization": 10.0,
        "levels": (
            (4, 60, 0.5, 2.0, 1, 0),
            (2, 40, 0.4, 2.0, 1, 50_000),
            (1, 20, 0.3, 2.0, 2, 50_000),
        ),
    },
    # the diffusion of the whole field so far plus the update, not of the update alone
    "mind*3, reg 10, whole field": {
        "similarity": (("mind", 3.0),),
        "regularization": 10.0,
        "regularize_field": True,
    },
    # the recommended preset with half the random MIND samples on its two finer levels
    "mind*3, reg 10, whole field, 25 000 samples": {
        "similarity": (("mind", 3.0),),
        "regularization": 10.0,
        "regularize_field": True,
        "levels": (
            (4, 60, 0.5, 2.0, 1, 0),
            (2, 40, 0.4, 2.0, 2, 25_000),
            (1, 20, 0.3, 2.0, 2, 25_000),
        ),
    },
    "ncc, reg 1": {"similarity": (("ncc", 1.0),), "regularization": 1.0},
    "ncc, reg 3": {"similarity": (("ncc", 1.0),), "regularization": 3.0},
    "ncc + mind*3, reg 3": {"similarity": (("ncc", 1.0), ("mind", 3.0)), "regularization": 3.0},
}


def main(argv=None) -> int:
    from deepsim.engine import auto_masks, optimise
    from deepsim.jacobian import jacobian_det
    from deepsim.presets import LevelSettings, engine_settings
    from deepsim.training.benchdata import semi_synthetic_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, default=3, choices=[2, 3])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--preset", help="a preset's levels instead of the tuning levels")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default all)")
    parser.add_argument(
        "--out", type=Path, help="result file (default: results/engine_validation_<dims>d.json)"
    )
    args = parser.parse_args(argv)
    pairs = list(
        semi_synthetic_pairs("fsaverage", args.pairs, VALIDATION_SEED, spatial_dims=args.dims)
    )
    rows = []
    label = args.preset or "tuning levels"
    print(f"| candidate ({args.dims}D, {label}) | EPE mm | initial mm | folding % | s/pair |")
    print("|---|---|---|---|---|")
    for name, change in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        change = dict(change)
        smooth = change.pop("smooth", 2.0)
        if "levels" in change:
            change["levels"] = tuple(LevelSettings(*lv) for lv in change["levels"])
        settings = replace(engine_settings(args.preset), **change)
        if not args.preset and "levels" not in change:
            levels = tuple(LevelSettings(*lv, smooth) for lv in LEVELS)
            settings = replace(settings, levels=levels)
        epe, init, fold, seconds = [], [], [], 0.0
        for p in pairs:
            f, m, truth = p["fixed"], p["moving"], p["disp"]
            t0 = time.perf_counter()
            fmask, mmask = auto_masks(f, m)
            res = optimise(f, m, settings, fixed_mask=fmask, moving_mask=mmask)
            seconds += time.perf_counter() - t0
            brain = (p["fixed_labels"] > 0)[0, 0]
            epe.append(float((res.disp - truth).norm(dim=1)[0][brain].mean()) * 2.0)
            init.append(float(truth.norm(dim=1)[0][brain].mean()) * 2.0)
            jac = jacobian_det(res.disp)[0, 0]
            fold.append(float((jac <= 0).float().mean()) * 100)
        row = {
            "candidate": name,
            "settings": settings.to_dict(),
            "epe_mm": sum(epe) / len(epe),
            "initial_mm": sum(init) / len(init),
            "folding_percent_max": max(fold),
            "seconds_per_pair": seconds / len(pairs),
        }
        rows.append(row)
        print(
            f"| {name} | {row['epe_mm']:.3f} | {row['initial_mm']:.2f} | "
            f"{row['folding_percent_max']:.4f} | {row['seconds_per_pair']:.1f} |",
            flush=True,
        )
    write_json(
        args.out or RESULTS / f"engine_validation_{args.dims}d.json",
        {"environment": environment(), "seed": VALIDATION_SEED, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
