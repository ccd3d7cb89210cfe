"""The held-out gate of a registration model: no held-out pair may end below no registration.

Each data config (``configs/eval-*.json``) gives held-out pairs; every pair goes through
``deepsim register``'s path (:func:`deepsim.training.evaluate.evaluate_model`). The table lists each
pair's Dice at identity and after registration; the gate passes when no pair's Dice after
registration is below its Dice at identity.

Each model runs as ``deepsim register`` runs it (network, then the engine's ``recommended``
preset); ``--network-only`` runs the network alone (``--io-steps 0``), so the two files show
what the engine adds.

Usage (general-2d: brain slices of a template no training saw, and microscopy-like cells)::

    python benchmarks/heldout_gate.py general-2d configs/eval-mni2009a-2d.json \\
        configs/eval-microscopy-2d.json --pairs 12 [--network-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, md_table, write_json  # noqa: E402


def main(argv=None) -> int:
    from deepsim.training.evaluate import evaluate_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="shipped model name or model file")
    p.add_argument("configs", nargs="+", type=Path, help="held-out data configs")
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--network-only", action="store_true", help="no engine (io_steps 0)")
    p.add_argument("--out", type=Path, help="result JSON (default results/heldout_gate_MODEL.json)")
    args = p.parse_args(argv)
    reports, table, below = {}, [], 0
    for config in args.configs:
        report = evaluate_model(
            config,
            args.model,
            pairs=args.pairs,
            device="cpu",
            io_steps=0 if args.network_only else None,
        )
        reports[config.name] = report
        for r in report["per_pair"]:
            worse = r["dice_after"] < r["dice_identity"]
            below += worse
            table.append(
                [config.name, r["pair"], f"{r['dice_identity']:.3f}", f"{r['dice_affine']:.3f}"]
                + [f"{r['dice_after']:.3f}", f"{r['endpoint_error_mm']:.2f}"]
                + ["BELOW identity" if worse else "ok"]
            )
    header = ["data", "pair", "Dice identity", "Dice affine", "Dice after", "EPE mm", "gate"]
    print(md_table(header, table))
    for name, report in reports.items():
        m = report["mean"]
        print(
            f"{name}: mean Dice {m['dice_identity']:.3f} -> {m['dice_after']:.3f}, "
            f"EPE {m.get('endpoint_error_mm', float('nan')):.2f} mm"
        )
    print(
        f"\npairs below identity: {below} of {len(table)}; gate {'PASS' if not below else 'FAIL'}"
    )
    suffix = "_network" if args.network_only else ""
    out = args.out or RESULTS / f"heldout_gate_{Path(args.model).stem}{suffix}.json"
    write_json(
        out,
        {
            "environment": environment(),
            "model": args.model,
            "variant": "network only" if args.network_only else "default (network + engine)",
            "reports": reports,
            "pairs_below_identity": below,
            "passes": not below,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
