"""Does a registration U-Net learn faster when it also sees the local evidence of motion?

An ablation of ``network.flow_features`` (:func:`deepsim.networks.flow_features`) and
``network.local_flow`` (:func:`deepsim.networks.local_flow`) on synthetic 2D random-shape pairs
with known smooth displacements: identical U-Nets (same seed, same data stream, Adam, batch 4)
regress the known displacement from the two images alone, from the images plus the flow features,
and from those plus the local (Lucas-Kanade) flow estimates. Prints the mean endpoint error
(pixels) on held-out pairs every ``--every`` steps; identity is the first column.

Usage::

    python benchmarks/flow_features.py [--steps 600] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, md_table, write_json  # noqa: E402

DATA = {
    "kind": "synthetic",
    "shape": [64, 64],
    "synth": {"n_labels": 6, "max_disp": 3.0, "label_smoothness": 8.0},
}


VARIANTS = {
    "images only": {},
    "images + flow features": {"flow_features": True},
    "images + flow features + local flow": {"flow_features": True, "local_flow": True},
}


def curve(inputs: dict, seed: int, steps: int, every: int, val_pairs: list[dict]) -> dict:
    from deepsim.networks import build_network
    from deepsim.training.datasets import make_source

    def epe() -> float:
        with torch.no_grad():
            return float(
                np.mean(
                    [
                        (net(b["moving"], b["fixed"]) - b["disp"]).norm(dim=1).mean()
                        for b in val_pairs
                    ]
                )
            )

    torch.manual_seed(seed)
    net = build_network(
        {
            "kind": "registration",
            "spatial_dims": 2,
            "channels": [16, 32, 32],
            "bnorm": False,
            **inputs,
        }
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    source, gen = make_source(DATA, "train", seed), torch.Generator().manual_seed(seed)
    errors, start = [epe()], time.perf_counter()
    for step in range(1, steps + 1):
        batch = [source.sample(gen) for _ in range(4)]
        m, f, d = (torch.cat([b[k] for b in batch]) for k in ("moving", "fixed", "disp"))
        loss = (net(m, f) - d).square().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            errors.append(epe())
    return {"epe": errors, "wall_s": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    from deepsim.training.datasets import make_source

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--out", type=Path, default=RESULTS / "flow_features.json")
    args = p.parse_args(argv)
    val = make_source(DATA, "val", 0)
    val_pairs = [val.pair(i) for i in range(8)]
    runs, rows = [], []
    for seed in args.seeds:
        for name, inputs in VARIANTS.items():
            r = curve(inputs, seed, args.steps, args.every, val_pairs)
            runs.append({"seed": seed, "inputs": name, **r})
            rows.append([seed, name] + [f"{e:.3f}" for e in r["epe"]] + [r["wall_s"]])
    steps = [f"step {s}" for s in range(0, args.steps + 1, args.every)]
    print(md_table(["seed", "network input", *steps, "time (s)"], rows))
    write_json(
        args.out,
        {"environment": environment(), "data": DATA, "steps": args.steps, "runs": runs},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
