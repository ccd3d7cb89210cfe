"""The 3D gate for general-purpose models: random-shape phantoms under a known smooth motion.

Each pair: a random label map (SynthMorph shapes, :func:`deepsim.training.synth.random_label_map`)
with random per-label intensities on an oblique, anisotropic grid with a non-zero origin, and
the same object moved by a known smooth diffeomorphic displacement of peak 4 mm. Every model runs
through :func:`deepsim.register.register` (what ``deepsim register`` does), and is scored with
:func:`deepsim.scoring.score_on_fixed_grid_mm`: endpoint error in mm over the foreground, Dice,
folding, runtime. Rows per model:

* ``default``: as ``deepsim register`` runs it (network + the engine's ``recommended`` preset);
* ``network only``: ``io_steps = 0``;
* ``engine only``: the same engine from the identity (the network's output zeroed), so the two
  rows above show what the network adds;
* ``affine only`` (once, model-independent): the affine pre-alignment alone.

Gates (issue 11): ``default`` endpoint error below half of identity's on every pair, Dice above
identity's, runtime <= 5 s; the network helps: ``network only`` (affine + network) has a lower
mean endpoint error than identity and than the affine alone.

Usage::

    python benchmarks/phantom_gate.py [--models general-3d brain-3d] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, md_table, write_json  # noqa: E402

SHAPE = (56, 64, 48)
SPACING = (1.6, 1.3, 2.2)
PEAK_MM = 4.0


def phantom_grid():
    from deepsim.geometry import Grid

    a, b = 0.35, -0.2
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag(SPACING)
    m[:3, 3] = [-41.0, 17.5, 63.0]
    return Grid(SHAPE, m)


def phantom_pair(seed: int, grid) -> dict:
    """One phantom pair as tensors ``(1, 1, *SHAPE)`` plus ``disp`` in fixed voxels."""
    from deepsim.training.synth import (
        _warp_labels,
        random_appearance,
        random_deformation,
        random_label_map,
    )

    g = torch.Generator().manual_seed(1000 + seed)
    labels = random_label_map(SHAPE, 8, g, smoothness=14.0)
    disp = random_deformation(SHAPE, 1.0, g, smoothness=32.0)
    mm = torch.einsum("ij,bj...->bi...", torch.as_tensor(grid.linear, dtype=torch.float32), disp)
    disp = disp * (PEAK_MM / float(mm.norm(dim=1).amax()))
    fixed_labels = _warp_labels(labels, disp)
    means, stds = torch.rand(8, generator=g), 0.05 * torch.rand(8, generator=g)
    moving = random_appearance(labels, g, means=means, stds=stds, bias_strength=0.1)
    fixed = random_appearance(fixed_labels, g, means=means, stds=stds, bias_strength=0.1)
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": labels,
        "disp": disp,
    }


def run(model, pairs, grid, io_steps=None) -> list[dict]:
    from deepsim.training.evaluate import evaluate_pairs

    return evaluate_pairs(pairs, model, grid, io_steps=io_steps, device="cpu")["per_pair"]


def identity_rows(pairs, grid) -> list[dict]:
    from deepsim.metrics import mean_foreground_dice
    from deepsim.scoring import score_on_fixed_grid_mm
    from deepsim.training.evaluate import pair_images

    rows = []
    for p in pairs:
        _, _, fl, ml, true_mm = pair_images(p, grid)
        s = score_on_fixed_grid_mm(fl, ml, np.zeros_like(true_mm), true_mm)
        rows.append(
            {
                "dice_after": mean_foreground_dice(fl.array, ml.array),
                "endpoint_error_mm": s.endpoint_error_mm,
                "runtime_s": 0.0,
            }
        )
    return rows


def zero_network(model):
    """A copy of ``model`` whose registration network predicts exactly zero."""
    from deepsim.modelio import load_model

    copy = load_model(model.path)
    last = copy.registration.head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return copy


def main(argv=None) -> int:
    from deepsim.api import catalogue
    from deepsim.modelio import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", help="3D shipped models or model files (default: all 3D)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--out", type=Path, default=RESULTS / "phantom_gate.json")
    args = p.parse_args(argv)
    cat = catalogue()
    names = args.models or sorted(n for n, e in cat.items() if e.spatial_dims == 3)
    grid = phantom_grid()
    pairs = [phantom_pair(s, grid) for s in args.seeds]
    results = {"identity": {"identity": identity_rows(pairs, grid)}}
    models = {n: load_model(cat[n].path if n in cat else Path(n), spatial_dims=3) for n in names}
    for name, model in models.items():
        if "affine" not in results:  # the affine pre-alignment does not depend on the model
            results["affine"] = {"affine only": run(zero_network(model), pairs, grid, io_steps=0)}
        results[name] = {
            "default (recommended)": run(model, pairs, grid),
            "network only": run(model, pairs, grid, io_steps=0),
            "engine only": run(zero_network(model), pairs, grid),
        }
    ident = results["identity"]["identity"]
    table, verdict, helps = [], {}, {}

    def mean_epe(rows):
        return float(np.mean([r["endpoint_error_mm"] for r in rows]))

    for name, variants in results.items():
        for variant, rows in variants.items():
            for seed, r, i in zip(args.seeds, rows, ident):
                table.append(
                    [name, variant, seed, f"{i['endpoint_error_mm']:.3f}"]
                    + [f"{r['endpoint_error_mm']:.3f}", f"{i['dice_after']:.3f}"]
                    + [f"{r['dice_after']:.3f}", f"{r['runtime_s']:.2f}"]
                )
            if variant.startswith("default"):
                verdict[name] = all(
                    r["endpoint_error_mm"] < 0.5 * i["endpoint_error_mm"]
                    and r["dice_after"] > i["dice_after"]
                    and r["runtime_s"] <= 5.0
                    for r, i in zip(rows, ident)
                )
            if variant == "network only":
                helps[name] = mean_epe(rows) < min(
                    mean_epe(ident), mean_epe(results["affine"]["affine only"])
                )
    header = ["model", "variant", "seed", "EPE identity mm", "EPE mm", "Dice identity"]
    header += ["Dice", "runtime s"]
    print(md_table(header, table))
    print("\ngate (EPE < identity/2, Dice up, <= 5 s on every pair):", verdict)
    print("network helps (network only: mean EPE below identity's and the affine's):", helps)
    write_json(
        args.out,
        {
            "environment": environment(),
            "grid": {"shape": SHAPE, "spacing_mm": SPACING, "peak_mm": PEAK_MM},
            "seeds": args.seeds,
            "results": results,
            "passes": verdict,
            "network_helps": helps,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
