"""Write the model card beside a shipped model, from its own config and a held-out evaluation.

usage: python scripts/model_card.py NAME [--pairs N] [--reuse]
  NAME: a shipped model (DeepSimRegistration/deepsim/models/NAME.pt) with configs/NAME.json,
  configs/NAME-*-extractor.json and a held-out data config configs/eval-*.json named in the
  config's info.heldout_config. Writes DeepSimRegistration/deepsim/models/NAME.md and
  NAME.heldout.json. Every number in the card comes from the model file or that evaluation.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from deepsim.api import models_dir
from deepsim.modelio import load_model
from deepsim.training.evaluate import evaluate_model

REPO = Path(__file__).resolve().parent.parent


def _table(rows: list[dict], keys: list[str]) -> str:
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |\n" for r in rows)


def _extractor_line(cfg: dict, configs: Path, steps) -> str:
    """Selected step and wall time of the extractor, from its own model file when it is there."""
    path = configs / cfg["loss"]["extractor"]
    if not path.is_file():
        return "- extractor: trained by the first command above"
    metrics = load_model(path).config.get("metrics", {})
    return (
        f"- extractor: {steps} steps, best validation at step {metrics.get('step', '?')} (the "
        f"one shipped), reached after {metrics.get('wall_s', '?')} s"
    )


def _more_sections(more: dict, args) -> list[str]:
    """One section per further held-out set: mean, pairs below identity, the network alone,
    per-pair table."""
    lines = []
    for name, rep in more.items():
        below = sum(r["dice_after"] < r["dice_identity"] for r in rep["per_pair"])
        m, alone = rep["mean"], rep["network_only"]
        lines += [
            f"## Held-out evaluation: {name}",
            f"`deepsim evaluate configs/{name} --model {args.name} --pairs {args.pairs}`: mean "
            f"Dice {m['dice_identity']:.3f} (identity) -> {m['dice_after']:.3f}, endpoint error "
            f"{m.get('endpoint_error_mm', float('nan')):.2f} mm, {m['runtime_s']:.1f} s; pairs "
            f"below identity: {below} of {rep['pairs']}. The network alone (`--io-steps 0`): Dice "
            f"{alone['dice_after']:.3f}, endpoint error "
            f"{alone.get('endpoint_error_mm', float('nan')):.2f} mm, {alone['runtime_s']:.1f} s.",
            "",
            _table(
                rep["per_pair"],
                [k for k in rep["per_pair"][0] if rep["per_pair"][0][k] is not None],
            ),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="rewrite the card from NAME.heldout.json, no evaluation",
    )
    args = parser.parse_args()
    path = models_dir() / f"{args.name}.pt"
    model = load_model(path)
    cfg = model.config
    info = model.info.extra  # provenance: data, training log, hardware, lambda selection
    card = json.loads((REPO / "configs" / f"{args.name}.json").read_text())["info"]["card"]
    log = info.get("training_log", [])
    extractor_cfg = json.loads((REPO / "configs" / f"{args.name}-extractor.json").read_text())
    heldout_cfg = REPO / "configs" / card["heldout_config"]

    def evaluate(data_config: Path) -> dict:
        """The default (network + the engine), and what the network alone gives beside it."""
        report = evaluate_model(data_config, str(path), pairs=args.pairs, device="cpu")
        alone = evaluate_model(data_config, str(path), pairs=args.pairs, device="cpu", io_steps=0)
        return {**report, "network_only": alone["mean"]}

    saved = models_dir() / f"{args.name}.heldout.json"
    if args.reuse:
        report = json.loads(saved.read_text())
    else:
        report = evaluate(heldout_cfg)
        more = {  # further held-out sets named in the card (e.g. microscopy for general-2d)
            name: evaluate(REPO / "configs" / name) for name in card.get("more_heldout_configs", [])
        }
        if more:
            report["more"] = more
        saved.write_text(json.dumps(report, indent=2) + "\n")
    m = report["mean"]
    rows = [
        {"setting": "network only (`--io-steps 0`)", **report["network_only"]},
        {"setting": "network + engine, `recommended` (default)", **m},
    ]
    lines = [
        f"# Model card: {args.name}",
        "",
        model.info.description,
        "",
        "## Networks",
        f"- registration U-Net: {json.dumps(cfg['networks']['registration'])}",
        f"- DeepSim feature extractor ({extractor_cfg['task']}): {json.dumps(cfg['networks']['extractor'])}",
        f"- similarity: {model.loss.similarity} with lambda = {model.loss.lam} (diffusion regulariser)",
        f"- lambda and feature levels: {info.get('lambda_selection', 'not recorded')}",
        f"- preprocessing: {json.dumps(model.preprocessing.to_dict())}",
        "",
        "## Training data",
        card.get("data", ""),
        "",
        f"- extractor data: `{json.dumps(extractor_cfg['data'])}`",
        f"- registration data: `{json.dumps(info.get('data'))}`",
        "",
        "## Train it from scratch",
        f"```\n{card.get('command', '')}\n```",
        "",
        "## Training runs",
        _extractor_line(cfg, heldout_cfg.parent, extractor_cfg["optim"]["steps"]),
        f"- steps: {log[-1]['step'] if log else '?'} (registration); wall time {log[-1]['wall_s'] if log else '?'} s "
        f"on {info.get('hardware', '?')}, torch {info.get('torch', '?')} (the 2 cores were shared "
        "with other training runs, so alone it is faster)",
        f"- selected checkpoint (best validation Dice): {json.dumps(cfg.get('metrics', {}))}",
        "",
        _table(log, ["step", "val_loss", "val_dice", "val_dice_identity", "lr", "wall_s"])
        if log
        else "",
        "## Held-out evaluation",
        f"`deepsim evaluate configs/{heldout_cfg.name} --model {args.name} --pairs {args.pairs}` "
        f"({report['pairs']} pairs, {platform.machine()}): semi-synthetic pairs of an anatomy held "
        "out of all training, under known random deformations and intensity changes, through the "
        "full `deepsim register` path (affine, model grid, network, then the multi-resolution "
        "engine's `recommended` preset).",
        "",
        _table(
            rows,
            [
                k
                for k in (
                    "setting",
                    "dice_identity",
                    "dice_affine",
                    "dice_after",
                    "folding_percent_fixed_grid",
                    "std_log_jacobian_fixed_grid",
                    "endpoint_error_mm",
                    "runtime_s",
                )
                if k in rows[0]
            ],
        ),
        "Per pair (default setting):",
        "",
        _table(
            report["per_pair"],
            [k for k in report["per_pair"][0] if report["per_pair"][0][k] is not None],
        ),
        *_more_sections(report.get("more", {}), args),
        "## Intended use and limits",
        card.get("use", ""),
        "",
        "## Licences",
        card.get("licence", ""),
        "",
    ]
    (models_dir() / f"{args.name}.md").write_text("\n".join(lines))
    print(
        f"wrote {models_dir() / (args.name + '.md')}: held-out Dice {m.get('dice_identity', 0):.3f} -> {m['dice_after']:.3f}"
    )


if __name__ == "__main__":
    main()
