"""The paper's metric comparison (Czolbe et al., MIDL 2021, Sec. 4-5), reproducible on a CPU.

One registration network (the library's :class:`deepsim.networks.RegistrationNet`) is trained
with each similarity metric, MSE, NCC, NCC_sup, DeepSim_ae and DeepSim_seg (VGG only when ImageNet
VGG16 weights are available locally, see ``--vgg-weights``), with an equal step budget per run and
lambda tuned per metric over a power-of-two grid by *validation* Dice (as the paper did). The
selected model of each metric is then evaluated on test pairs that no training or tuning step saw:

* ``semi_synthetic``: the held-out MNI ICBM 2009a template (``mni2009a``) and its tissue labels
  under known random deformations (so the endpoint error is known too);
* ``templates``: real inter-template pairs fsaverage <-> mni2009a (tissue scheme, both
  directions). fsaverage seeded the training data, mni2009a did not.

2D (default): axial slices of the common 2 mm grid (112 x 96). Training data: on-the-fly
synthetic pairs seeded by fsaverage slices (labels and image under random deformations and
intensity changes); validation: other pairs of the same generator (fsaverage only). 3D
(``--dims 3``): the same on the 96 x 112 x 96 volumes (64^3 training crops); a plain U-Net does
not leave the identity in a 2-core CPU budget, so ``--flow-inputs`` gives every network
general-3d's inputs (flow features and local flow, on a grid ``--shrink`` times coarser).

``--optimiser io`` compares the metrics where a network cannot be trained in the budget (3D on a
CPU): each (metric, lambda) registers every pair by instance optimisation instead, ``--budget``
Adam steps on the displacement from the identity (the optimiser of ``deepsim register
--io-steps``), lambda again tuned on validation pairs. NCC_sup is left out there: it would see the
labels of the pair it registers. ``--extractors seg=PATH,ae=PATH`` reuses trained extractors
(for example the shipped ``brain-3d`` model's) instead of training them.

Also: test-time Gaussian noise of increasing strength inside a box (models trained clean), with
Dice, std log|J|, folding and the diffusion regulariser inside the box, and a figure of the
deformation grids there.

Outputs: ``benchmarks/results/paper_comparison_{2d,3d}.json`` and figures in ``docs/figures/``.
Runs (extractors and registration models) live in ``--runs`` and are reused: a run whose
checkpoint reached the budget is not trained again, so an interrupted comparison resumes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/paper_comparison.py --budget 400
    python benchmarks/paper_comparison.py --dims 3 --optimiser io --budget 60 --val-real-image-prob 1 \
        --extractors seg=DeepSimRegistration/deepsim/models/brain-3d.pt,ae=runs/brain-3d-ae/ae-extractor/model.pt \
        --deepsim-levels 0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    FIGURES,
    RESULTS,
    ROOT,
    environment,
    summary_stats,
    write_json,
)
from common import METHOD_NAMES as LABELS  # noqa: E402
from figures import boxplot, grid_figure  # noqa: E402
from paper_data import (  # noqa: E402
    N_CLASSES,
    TEST_SLICES,
    TRAIN_SLICES,
    SliceSeededPairs,
    add_noise,
    data_config,
    evaluate_field,
    noise_region,
    test_pairs,
)

log = logging.getLogger("paper_comparison")

METRICS = ["mse", "ncc", "ncc_sup", "deepsim_ae", "deepsim_seg", "vgg"]
# centre of each metric's lambda grid (log2); the paper's brain values are MSE 0.08, NCC 1,
# NCC_sup 2, DeepSim_ae 1, DeepSim_seg 2 (deepsim-paper.md Sec. 3.4)
CENTRE_LOG2 = {"mse": -4, "ncc": 0, "ncc_sup": 0, "deepsim_ae": 0, "deepsim_seg": 0, "vgg": 0}


def base_config(args, name: str, task: str) -> dict:
    return {
        "name": name,
        "task": task,
        "spatial_dims": args.dims,
        "seed": args.seed,
        "network": {
            "channels": args.channels,
            "bnorm": True,
            "dropout": 0.0,
            # the inputs that let a 3D network learn on a CPU budget (flow_features.py), and no
            # batch norm (batches of 1), as configs/general-3d.json; only when asked, so earlier
            # runs' configs still match
            **(
                {"bnorm": False, "shrink": args.shrink, "flow_features": True, "local_flow": True}
                if args.flow_inputs
                else {}
            ),
        },
        "data": data_config(args.dims),
        "optim": {
            "lr": args.lr,
            "steps": args.budget,
            "batch_size": args.batch_size,
            "val_every": max(1, args.budget // 4),
            "val_pairs": args.val_pairs,
            "checkpoint_every": 100,
            **({"grad_clip": 1.0} if args.flow_inputs else {}),
        },
        "preprocessing": {"spacing": 2.0, "multiple": 8},
    }


def _done(run: Path, cfg: dict) -> bool:
    """True when ``run`` holds a model file and its checkpoint reached the budget of ``cfg``.
    A run made with another config is refused (choose another ``--runs`` folder)."""
    ckpt_path = run / "checkpoint.pt"
    if not ckpt_path.is_file():
        return False
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    saved = json.loads(ckpt["config"])
    if {k: v for k, v in saved.items() if k != "optim"} != {
        k: v for k, v in cfg.items() if k != "optim"
    }:
        raise SystemExit(
            f"{run} was trained with another config; use another --runs folder or delete it"
        )
    steps = int(cfg["optim"]["steps"])
    return (run / "model.pt").is_file() and int(ckpt["step"]) >= steps


def _train(cfg: dict, run: Path) -> dict:
    """Train (or resume) one run; returns the best validation metrics of its model file."""
    from deepsim.modelio import read_model_file
    from deepsim.training.train import train

    if not _done(run, cfg):
        t0 = time.perf_counter()
        train(cfg, run, device="cpu", progress=False)
        log.info("trained %s in %.0f s", run.name, time.perf_counter() - t0)
    else:
        log.info("reusing %s", run)
    config, _ = read_model_file(run / "model.pt")
    metrics = dict(config.get("metrics", {}))
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    metrics["train_wall_s"] = logs[-1].get("wall_s") if logs else None
    return metrics


def train_extractors(args, runs: Path) -> dict[str, Path]:
    out = {}
    for kind, task in (("seg", "segmentation"), ("ae", "autoencoder")):
        cfg = base_config(args, f"extractor-{kind}", task)
        cfg["optim"]["steps"] = args.extractor_budget
        cfg["optim"]["val_every"] = max(1, args.extractor_budget // 4)
        if task == "segmentation":
            cfg["network"]["n_classes"] = N_CLASSES
        run = runs / f"extractor-{kind}"
        _train(cfg, run)
        out[kind] = run / "model.pt"
    return out


def loss_config(metric: str, lam: float, extractors: dict[str, Path], args) -> dict:
    if metric in ("mse", "ncc"):
        return {"similarity": metric, "lambda": lam}
    if metric == "ncc_sup":
        return {"similarity": "ncc_sup", "n_classes": N_CLASSES, "lambda": lam}
    if metric == "vgg":
        return {"similarity": "vgg", "vgg_weights": str(args.vgg_weights), "lambda": lam}
    kind = metric.split("_")[1]
    cfg = {"similarity": "deepsim", "extractor": str(extractors[kind].resolve()), "lambda": lam}
    if args.deepsim_levels is not None:
        cfg["levels"] = args.deepsim_levels
    return cfg


def lambda_grid(metric: str, exponents: list[int]) -> list[float]:
    return [2.0 ** (CENTRE_LOG2[metric] + e) for e in exponents]


# --------------------------------------------------------------------------------------------
# test pairs and evaluation


def predict(model, pair: dict) -> torch.Tensor:
    with torch.inference_mode():
        return model.registration(pair["moving"], pair["fixed"]).float()


class InstanceOptimiser:
    """Registers one pair by ``steps`` Adam steps of ``similarity + lambda * diffusion`` on the
    displacement, from the identity: the ``--optimiser io`` stand-in for a trained network."""

    def __init__(self, loss_cfg: dict, dims: int, steps: int, lr: float):
        from deepsim.training.train import similarity_loss

        self.sim, _ = similarity_loss(loss_cfg, dims, ROOT, "cpu")
        self.lam, self.steps, self.lr = float(loss_cfg["lambda"]), steps, lr

    def __call__(self, pair: dict) -> torch.Tensor:
        from deepsim.register import optimise_displacement

        moving, fixed = pair["moving"], pair["fixed"]
        return optimise_displacement(
            lambda warped, f: self.sim(warped, f, None, pair),
            moving,
            fixed,
            torch.zeros(1, moving.ndim - 2, *moving.shape[2:]),
            self.lam,
            self.steps,
            self.lr,
        )


def tune_io(optimiser: InstanceOptimiser, val_pairs: list[dict]) -> dict:
    """Validation Dice of instance optimisation, in the shape of :func:`_train`'s metrics."""
    t0 = time.perf_counter()
    dice = [evaluate_field(p, optimiser(p))["mean_dice"] for p in val_pairs]
    identity = [evaluate_field(p, torch.zeros_like(p["disp"]))["mean_dice"] for p in val_pairs]
    return {
        "val_dice": float(np.mean(dice)),
        "val_dice_identity": float(np.mean(identity)),
        "step": optimiser.steps,
        "train_wall_s": round(time.perf_counter() - t0, 1),
    }


def wilcoxon_tests(per_pair: dict[str, dict[str, list]], sets: list[str]) -> list[dict]:
    """One-sided Wilcoxon signed-rank tests: DeepSim (ae, seg) > each baseline, per test set."""
    from scipy.stats import wilcoxon

    tests = []
    ours = [m for m in ("deepsim_seg", "deepsim_ae") if m in per_pair]
    others = [m for m in per_pair if m not in ("identity",)]
    for test_set in sets + ["all"]:
        for a in ours:
            for b in others:
                if b == a or (a == "deepsim_ae" and b == "deepsim_seg"):
                    continue
                x = np.asarray(per_pair[a][test_set], float)
                y = np.asarray(per_pair[b][test_set], float)
                diff = x - y
                row = {
                    "set": test_set,
                    "ours": a,
                    "baseline": b,
                    "n": int(diff.size),
                    "mean_diff": float(diff.mean()),
                    "wins": int((diff > 0).sum()),
                }
                if diff.size and np.any(diff != 0):
                    res = wilcoxon(x, y, alternative="greater")
                    row.update(statistic=float(res.statistic), p=float(res.pvalue))
                else:
                    row.update(statistic=None, p=None)
                tests.append(row)
    return tests


def tune_lambdas(args, metrics, exponents, extractors, runs, val_pairs) -> tuple[dict, dict]:
    """Every (metric, lambda) run, the best lambda of each metric by validation Dice; a best
    lambda on an edge of the grid extends the grid past it (``--max-extend`` times at most)."""
    io = args.optimiser == "io"
    tuning: dict[str, list[dict]] = {}
    selected: dict[str, dict] = {}
    step = min(np.diff(sorted(exponents))) if len(exponents) > 1 else 2
    for metric in metrics:
        tuning[metric] = []
        offsets = sorted(exponents)
        tried: set[int] = set()
        extended = 0
        while True:
            for e in offsets:
                if e in tried:
                    continue
                tried.add(e)
                lam = 2.0 ** (CENTRE_LOG2[metric] + e)
                cfg = base_config(args, f"{metric}-lam{lam:g}", "registration")
                cfg["loss"] = loss_config(metric, lam, extractors, args)
                run = runs / f"{metric}-lam{lam:g}"
                if io:
                    optimiser = InstanceOptimiser(cfg["loss"], args.dims, args.budget, args.io_lr)
                    best = tune_io(optimiser, val_pairs)
                else:
                    best = _train(cfg, run)
                tuning[metric].append(
                    {
                        "lambda": lam,
                        "log2_offset": e,
                        "val_dice": best.get("val_dice"),
                        "val_dice_identity": best.get("val_dice_identity"),
                        "best_step": best.get("step"),
                        "train_wall_s": best.get("train_wall_s"),
                        "run": None
                        if io
                        else str(run.relative_to(ROOT))
                        if run.is_relative_to(ROOT)
                        else str(run),
                    }
                )
            best_row = max(tuning[metric], key=lambda r: r["val_dice"] or -1.0)
            # the best lambda on an edge of the grid: extend the grid past that edge
            e_best, lo, hi = best_row["log2_offset"], min(tried), max(tried)
            if extended >= args.max_extend or e_best not in (lo, hi):
                break
            offsets = [e_best + (step if e_best == hi else -step)]
            extended += 1
        tuning[metric].sort(key=lambda r: r["lambda"])
        selected[metric] = best_row
        log.info(
            "%s: lambda %g selected (val Dice %.4f)",
            metric,
            best_row["lambda"],
            best_row["val_dice"],
        )
    return tuning, selected


def registration_functions(args, metrics, selected, extractors) -> dict:
    """Metric -> ``register(pair) -> disp``: the selected network, or instance optimisation."""
    from deepsim.modelio import load_model

    if args.optimiser == "io":
        return {
            m: InstanceOptimiser(
                loss_config(m, selected[m]["lambda"], extractors, args),
                args.dims,
                args.budget,
                args.io_lr,
            )
            for m in metrics
        }
    models = {m: load_model(ROOT / selected[m]["run"] / "model.pt") for m in metrics}
    return {m: (lambda pair, model=models[m]: predict(model, pair)) for m in metrics}


def test_records(pairs, register_with: dict, dims: int) -> list[dict]:
    """One scored record per (test pair, method), the identity included."""
    records = []
    for pair in pairs:
        shape = pair["fixed"].shape[2:]
        fields = {"identity": torch.zeros(1, dims, *shape)}
        fields.update({m: register(pair) for m, register in register_with.items()})
        for method, disp in fields.items():
            records.append(
                {
                    "set": pair["set"],
                    "pair": pair["id"],
                    "method": method,
                    **evaluate_field(pair, disp),
                }
            )
    return records


def summarise(records: list[dict], methods: list[str], sets: list[str]) -> tuple[dict, dict]:
    """``(per_pair, summary)``: Dice per pair by method and set, and the means per method and set."""
    per_pair = {
        m: {
            s: [r["mean_dice"] for r in records if r["method"] == m and r["set"] == s]
            for s in sets + ["all"]
        }
        for m in methods
    }
    for m in methods:
        per_pair[m]["all"] = [r["mean_dice"] for r in records if r["method"] == m]
    summary = {}
    for m in methods:
        summary[m] = {}
        for s in sets + ["all"]:
            rows = [r for r in records if r["method"] == m and (s == "all" or r["set"] == s)]
            entry = {
                "dice": summary_stats([r["mean_dice"] for r in rows]),
                "folding_percent": float(np.mean([r["folding_percent"] for r in rows])),
                "std_log_jacobian": float(np.mean([r["std_log_jacobian"] for r in rows])),
                "regulariser": float(np.mean([r["regulariser"] for r in rows])),
                "per_label_dice": {
                    str(k): float(np.nanmean([r["dice"].get(str(k), np.nan) for r in rows]))
                    for k in range(1, N_CLASSES)
                },
            }
            epe = [r["epe_mm"] for r in rows if "epe_mm" in r]
            if epe:
                entry["epe_mm"] = float(np.mean(epe))
            summary[m][s] = entry
    return per_pair, summary


def noise_records(args, noisy_pairs, register_with: dict, sigmas) -> tuple[list[dict], dict]:
    """Networks trained clean, Gaussian noise added inside a central box of both test images:
    scored records, and the panels of the deformation-grid figure (2D)."""
    noise_rows = []
    grid_rows: dict[str, list] = {}
    show = {sigmas[0], sigmas[-1]} if args.dims == 2 else set()
    for sigma in sigmas:
        for k, pair in enumerate(noisy_pairs):
            region = noise_region(pair["fixed"].shape[2:])
            gen = torch.Generator().manual_seed(args.test_seed * 1000 + k)
            noisy = dict(pair)
            noisy["fixed"] = add_noise(pair["fixed"], sigma, region, gen)
            noisy["moving"] = add_noise(pair["moving"], sigma, region, gen)
            panels = []
            if k == 0 and sigma in show:
                zero = np.zeros((2, *pair["fixed"].shape[2:]))
                panels.append(("fixed (noisy)", noisy["fixed"][0, 0].numpy(), zero))
            for m, register in register_with.items():
                disp = register(noisy)
                ev = evaluate_field(noisy, disp, region)
                noise_rows.append({"sigma": sigma, "pair": pair["id"], "method": m, **ev})
                if panels:
                    from deepsim.warp import warp

                    clean_warped = warp(pair["moving"], disp)[0, 0].numpy()
                    panels.append((LABELS[m], clean_warped, disp[0].numpy()))
            if panels:
                grid_rows[f"σ = {sigma:g}"] = panels
    return noise_rows, grid_rows


def summarise_noise(noise_rows: list[dict], metrics: list[str], sigmas) -> dict:
    """Means per metric and noise level."""
    return {
        m: {
            str(s): {
                key: float(
                    np.nanmean([r[key] for r in noise_rows if r["method"] == m and r["sigma"] == s])
                )
                for key in (
                    "mean_dice",
                    "std_log_jacobian",
                    "regulariser",
                    "folding_percent",
                    "epe_mm",
                )
            }
            for s in sigmas
        }
        for m in metrics
    }


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, choices=[2, 3], default=2)
    parser.add_argument("--budget", type=int, default=400, help="optimiser steps per run")
    parser.add_argument("--extractor-budget", type=int, default=None, help="default: --budget")
    parser.add_argument(
        "--lambdas",
        default="-2,0,2",
        help="lambda grid as log2 offsets from each metric's centre (comma separated; the "
        "centres are MSE 2^-4, all others 2^0)",
    )
    parser.add_argument(
        "--max-extend",
        type=int,
        default=1,
        help="when the best lambda is on an edge of the grid, extend the grid past it by one "
        "step, at most this many times per metric",
    )
    parser.add_argument("--metrics", default="mse,ncc,ncc_sup,deepsim_ae,deepsim_seg,vgg")
    parser.add_argument("--vgg-weights", type=Path, default=ROOT / "vgg16-397923af.pth")
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument(
        "--flow-inputs",
        action="store_true",
        help="registration networks also see the flow features and the local flow of their "
        "inputs (network.flow_features, network.local_flow), on a grid --shrink times coarser, "
        "without batch norm and with gradients clipped at norm 1 (as general-3d)",
    )
    parser.add_argument("--shrink", type=int, default=4, help="with --flow-inputs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-pairs", type=int, default=16)
    parser.add_argument("--test-pairs", type=int, default=4, help="semi-synthetic pairs per slice")
    parser.add_argument("--noise", default="0,0.1,0.2,0.3,0.4", help="test-time noise sigmas")
    parser.add_argument("--noise-pairs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--test-seed", type=int, default=2021)
    parser.add_argument(
        "--runs", type=Path, default=None, help="default: benchmarks/runs/paper-{2d,3d}"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--optimiser",
        choices=["network", "io"],
        default="network",
        help="train a registration network per run (the paper) or register each pair by "
        "instance optimisation (--budget steps per pair)",
    )
    parser.add_argument("--io-lr", type=float, default=0.1, help="Adam step of --optimiser io")
    parser.add_argument(
        "--val-real-image-prob",
        type=float,
        default=None,
        help="--optimiser io: share of validation pairs with fsaverage's own image rather than "
        "random intensities (default: as the training data); 1 keeps validation in the T1 domain "
        "of the test pairs and of extractors trained on real images only",
    )
    parser.add_argument(
        "--extractors", default=None, help="seg=PATH,ae=PATH: trained extractors to reuse"
    )
    parser.add_argument(
        "--deepsim-levels", default=None, help="DeepSim feature levels, e.g. 0 (default: all)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("deepsim").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    args.channels = [int(c) for c in args.channels.split(",")]
    args.extractor_budget = args.extractor_budget or args.budget
    if args.deepsim_levels is not None:
        args.deepsim_levels = [int(v) for v in args.deepsim_levels.split(",")]
    io = args.optimiser == "io"
    tag = f"{args.dims}d" + ("_io" if io else "")
    runs = args.runs or ROOT / "benchmarks" / "runs" / f"paper-{tag}"
    out = args.out or RESULTS / f"paper_comparison_{tag}.json"
    exponents = [int(e) for e in args.lambdas.split(",")]
    metrics = [m for m in args.metrics.split(",") if m]
    unknown = set(metrics) - set(METRICS)
    if unknown:
        parser.error(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    notes = []
    if "vgg" in metrics and (args.dims != 2 or not args.vgg_weights.is_file()):
        metrics.remove("vgg")
        notes.append(
            "VGG not run: "
            + (
                "2D only"
                if args.dims != 2
                else f"no ImageNet VGG16 weights at {args.vgg_weights} (none are available "
                "offline on this machine; they are never downloaded)"
            )
        )
    if io and "ncc_sup" in metrics:
        metrics.remove("ncc_sup")
        notes.append(
            "NCC_sup not run: with instance optimisation it would use the labels of the pair it "
            "registers (test labels), which no other method sees"
        )
    from deepsim.training.datasets import register_source

    register_source(
        "fsaverage-slices", lambda data, split, seed, pre: SliceSeededPairs(data, split, seed)
    )
    t_start = time.perf_counter()
    if args.extractors:
        extractors = {
            k: Path(v) for k, v in (item.split("=", 1) for item in args.extractors.split(","))
        }
    else:
        extractors = train_extractors(args, runs)
    val_pairs = []
    if io:
        from deepsim.training.datasets import make_source

        val_data = data_config(args.dims)
        if args.val_real_image_prob is not None:
            val_data["synth"]["real_image_prob"] = args.val_real_image_prob
        source = make_source(val_data, "val", args.seed)
        val_pairs = [source.pair(i) for i in range(args.val_pairs)]

    tuning, selected = tune_lambdas(args, metrics, exponents, extractors, runs, val_pairs)

    pairs = test_pairs(args)
    sets = sorted({p["set"] for p in pairs}, key=["semi_synthetic", "templates"].index)
    register_with = registration_functions(args, metrics, selected, extractors)
    records = test_records(pairs, register_with, args.dims)
    methods = ["identity"] + metrics
    per_pair, summary = summarise(records, methods, sets)
    tests = wilcoxon_tests({m: per_pair[m] for m in metrics}, sets)

    sigmas = [float(v) for v in args.noise.split(",")]
    noisy_pairs = [p for p in pairs if p["set"] == "semi_synthetic"][: args.noise_pairs]
    noise_rows, grid_rows = noise_records(args, noisy_pairs, register_with, sigmas)
    noise_summary = summarise_noise(noise_rows, metrics, sigmas)

    figures = {}
    figure_dir = FIGURES if args.out is None else out.parent  # a trial run keeps docs/ intact
    figure_dir.mkdir(parents=True, exist_ok=True)
    box = figure_dir / f"paper_{tag}_boxplot.png"
    boxplot(
        {m: per_pair[m] for m in methods},
        sets,
        box,
        f"{args.dims}D test Dice per metric ("
        + (
            f"{args.budget} instance-optimisation steps per pair"
            if io
            else f"{args.budget} steps per run"
        )
        + ")",
    )
    figures["boxplot"] = str(box.relative_to(ROOT) if box.is_relative_to(ROOT) else box)
    if grid_rows:
        gpath = figure_dir / f"paper_{tag}_noise_grids.png"
        region = noise_region(noisy_pairs[0]["fixed"].shape[2:])
        grid_figure(
            grid_rows,
            region,
            gpath,
            f"deformation grids inside the noisy box, pair {noisy_pairs[0]['id']} "
            "(background: the clean moving image warped by each field)",
        )
        figures["noise_grids"] = str(
            gpath.relative_to(ROOT) if gpath.is_relative_to(ROOT) else gpath
        )

    result = {
        "benchmark": "paper_comparison",
        "dims": args.dims,
        "settings": {
            "optimiser": "instance optimisation per pair (Adam on the displacement, from the "
            f"identity, lr {args.io_lr})"
            if io
            else "one registration network trained per (metric, lambda)",
            "io_lr": args.io_lr if io else None,
            "deepsim_levels": args.deepsim_levels,
            "extractors": {k: str(v) for k, v in extractors.items()},
            "budget_steps": args.budget,
            "extractor_budget_steps": args.extractor_budget,
            "lambda_log2_offsets": exponents,
            "lambda_grid_max_extend": args.max_extend,
            "lambda_centres_log2": {m: CENTRE_LOG2[m] for m in metrics},
            "network_channels": args.channels,
            "network_flow_inputs": {"shrink": args.shrink} if args.flow_inputs else False,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "val_pairs": args.val_pairs,
            "seed": args.seed,
            "test_seed": args.test_seed,
            "train_data": "synthetic pairs seeded by fsaverage "
            + (f"axial slices {TRAIN_SLICES}" if args.dims == 2 else "volumes (64^3 crops)")
            + ", tissue labels (GM, WM, CSF)",
            "validation": "other pairs of the same fsaverage-seeded generator (never mni2009a)"
            + (
                f", fsaverage's own image in {args.val_real_image_prob:.0%} of them"
                if io and args.val_real_image_prob is not None
                else ""
            ),
            "test_slices": TEST_SLICES if args.dims == 2 else None,
            "test_pairs_per_slice": args.test_pairs,
            "noise_sigmas": sigmas,
            "noise_pairs": len(noisy_pairs),
            "noise_region": "central box, half of every axis, added to fixed and moving, clamped to [0, 1]",
        },
        "notes": notes,
        "labels": {"1": "grey matter", "2": "white matter", "3": "CSF"},
        "tuning": tuning,
        "selected": {m: selected[m]["lambda"] for m in metrics},
        "summary": summary,
        "wilcoxon": tests,
        "noise": noise_summary,
        "records": records,
        "figures": figures,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "environment": environment(),
    }
    write_json(out, result)
    log.info("wrote %s", out)
    for m in methods:
        s = summary[m]["all"]
        print(
            f"{LABELS[m]:>16}: Dice {s['dice']['mean']:.4f} ± {s['dice']['std']:.4f}  "
            f"folding {s['folding_percent']:.3f} %  std log|J| {s['std_log_jacobian']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
