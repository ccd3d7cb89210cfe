"""The paper's metric comparison tables (2D, 3D, 3D by instance optimisation)."""

from __future__ import annotations

from pathlib import Path

from common import METHOD_NAMES as NAMES
from common import fmt, md_table
from render_common import SETS, dice_cell, env_line


def paper_section(res: dict | None, tag: str) -> list[str]:
    io = tag.endswith("_io")
    title = f"{tag[0]}D" + (", instance optimisation" if io else "")
    out = [f"## The paper's metric comparison, {title} (`benchmarks/paper_comparison.py`)", ""]
    if res is None:
        return out + [f"Not run yet: `python benchmarks/paper_comparison.py --dims {tag[0]}`.", ""]
    s = res["settings"]
    wall = sum(r.get("train_wall_s") or 0 for v in res["tuning"].values() for r in v) / 60
    n_runs = sum(len(v) for v in res["tuning"].values())
    if io:
        out += [
            f"Machine: {env_line(res['environment'])}. Tuning wall time over the {n_runs} "
            f"(metric, λ) settings: {wall:.0f} min; whole script {res['wall_s'] / 60:.0f} min.",
            "",
            "A registration network per metric cannot be trained to a useful level on this 2-core "
            "CPU in 3D (see the brain-3d model card), so here every metric registers each pair by "
            f"**instance optimisation: {s['budget_steps']} Adam steps on the displacement** from "
            f"the identity (lr {s.get('io_lr')}), similarity + λ × diffusion, the optimiser that "
            "`deepsim register --io-steps` runs. This compares the metrics as loss functions, "
            "not as training signals for a network.",
            f"- DeepSim feature levels: {s.get('deepsim_levels') or 'all'}; extractors: "
            + ", ".join(f"{k}: `{v}`" for k, v in s.get("extractors", {}).items())
            + ".",
            f"- Validation (λ selection, {s['val_pairs']} pairs): {s['validation']}.",
        ]
    else:
        out += [
            f"Machine: {env_line(res['environment'])}. Training wall time summed over the "
            f"{n_runs} registration runs: {wall:.0f} min (plus the two extractors); runs are "
            "reused when the script is rerun.",
            "",
            f"- Budget: **{s['budget_steps']} optimiser steps per registration run** (batch "
            f"{s['batch_size']}, lr {s['lr']}), {s['extractor_budget_steps']} per feature "
            f"extractor; network channels {s['network_channels']}"
            + (
                f", inputs pooled by {s['network_flow_inputs']['shrink']}, with flow features "
                "and local flow, no batch norm, gradients clipped at norm 1"
                if s.get("network_flow_inputs")
                else ""
            )
            + ". The paper trained for tens of "
            "thousands of steps; these runs are short, so read the ranking, not the absolute Dice.",
            f"- Training data: {s['train_data']}. Validation (λ and checkpoint selection, "
            f"{s['val_pairs']} pairs): {s['validation']}.",
        ]
    out += [
        f"- λ grid per metric: 2^(centre + offset), offsets {s['lambda_log2_offsets']}, centres "
        f"(log2) {s['lambda_centres_log2']}; when the best λ was on an edge of the grid, the grid "
        f"was extended by one more power-of-two step past that edge (at most "
        f"{s.get('lambda_grid_max_extend', 0)} time(s) per metric).",
        (
            f"- Test pairs (never used for training or tuning): semi-synthetic mni2009a slices at "
            f"axial positions {s['test_slices']}, {s['test_pairs_per_slice']} pairs each, and the "
            "real pairs fsaverage ↔ mni2009a at the same positions."
            if s.get("test_slices")
            else f"- Test pairs (never used for training or tuning): {s['test_pairs_per_slice']} "
            "semi-synthetic mni2009a volumes and the real volume pairs fsaverage ↔ mni2009a "
            "(both directions), on the 2 mm grid."
        )
        + " Dice = mean over the tissue classes (grey matter, white matter, CSF), labels warped "
        "by nearest neighbour.",
        "",
    ]
    for note in res.get("notes", []):
        out += [f"> {note}", ""]
    # tuning
    rows = []
    for m, runs in res["tuning"].items():
        for r in runs:
            rows.append(
                [
                    NAMES[m],
                    f"{r['lambda']:g}",
                    fmt(r["val_dice"], 4),
                    fmt(r.get("val_dice_identity"), 4),
                    str(r.get("best_step")),
                    "**selected**" if r["lambda"] == res["selected"][m] else "",
                ]
            )
    out += [
        "λ tuning (validation Dice "
        + ("after instance optimisation" if io else "of each run's best checkpoint")
        + "):",
        "",
        md_table(
            [
                "metric",
                "λ",
                "val Dice",
                "val Dice, no registration",
                "steps" if io else "best step",
                "",
            ],
            rows,
        ),
        "",
    ]
    # test table
    methods = list(res["summary"])
    for test_set in ("semi_synthetic", "templates", "all"):
        rows = []
        for m in methods:
            e = res["summary"][m].get(test_set)
            if not e:
                continue
            lam = res["selected"].get(m)
            rows.append(
                [
                    NAMES[m],
                    "–" if lam is None else f"{lam:g}",
                    dice_cell(e),
                    " / ".join(fmt(e["per_label_dice"][k], 3) for k in sorted(e["per_label_dice"])),
                    fmt(e.get("epe_mm"), 2),
                    fmt(e["folding_percent"], 3),
                    fmt(e["std_log_jacobian"], 3),
                    fmt(e["regulariser"], 4),
                ]
            )
        n = res["summary"][methods[0]][test_set]["dice"]["n"]
        out += [
            f"Test: {SETS[test_set]} (n = {n} pairs):",
            "",
            md_table(
                [
                    "metric",
                    "λ",
                    "mean fg Dice ± sd",
                    "Dice GM / WM / CSF",
                    "EPE mm",
                    "folding %",
                    "std log\\|J\\|",
                    "regulariser",
                ],
                rows,
            ),
            "",
        ]
    if res["figures"].get("boxplot"):
        out += [
            f"![test Dice box plots]({Path(res['figures']['boxplot']).relative_to('docs')})",
            "",
        ]
    # wilcoxon
    rows = [
        [
            t["set"],
            f"{NAMES[t['ours']]} > {NAMES[t['baseline']]}",
            str(t["n"]),
            f"{t['mean_diff']:+.4f}",
            f"{t['wins']}/{t['n']}",
            "–" if t["p"] is None else f"{t['p']:.2g}",
        ]
        for t in res["wilcoxon"]
    ]
    out += [
        "One-sided Wilcoxon signed-rank tests on per-pair mean Dice (H1: DeepSim better):",
        "",
        md_table(["set", "hypothesis", "n", "mean diff", "wins", "p"], rows),
        "",
    ]
    # noise
    sigmas = res["settings"]["noise_sigmas"]
    rows = []
    for m, per_sigma in res["noise"].items():
        rows.append(
            [NAMES[m]]
            + [
                f"{fmt(per_sigma[str(sg)]['mean_dice'], 3)} / {fmt(per_sigma[str(sg)]['std_log_jacobian'], 3)}"
                f" / {fmt(per_sigma[str(sg)]['regulariser'], 4)}"
                for sg in sigmas
            ]
        )
    out += [
        f"Test-time noise ({s['noise_region']}; models trained clean; "
        f"{s['noise_pairs']} semi-synthetic pairs). Each cell: Dice / std log|J| / regulariser, "
        "all measured inside the noisy box:",
        "",
        md_table(["metric"] + [f"σ = {sg:g}" for sg in sigmas], rows),
        "",
    ]
    if res["figures"].get("noise_grids"):
        out += [
            f"![deformation grids in the noisy region]({Path(res['figures']['noise_grids']).relative_to('docs')})",
            "",
        ]
    return out
