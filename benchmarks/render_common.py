"""Shared pieces of the rendered tables: test-set names, environment line, Dice cells."""

from __future__ import annotations

SETS = {
    "semi_synthetic": "semi-synthetic mni2009a (known deformation)",
    "templates": "real inter-template pairs",
    "templates_tissue": "real pairs fsaverage ↔ mni2009a (GM, WM, CSF)",
    "templates_cortex": "real pairs fsaverage ↔ mni6asym (cortex, other brain)",
    "templates_brain": "real pairs mni2009a ↔ mni6asym (brain mask)",
    "whole_head": "whole head → skull-stripped (fsaverage T1 → mni2009a, brain mask)",
    "non_brain": "non-brain phantom (known motion, oblique grid)",
    "all": "all test pairs",
}


def env_line(env: dict) -> str:
    return (
        f"{env.get('host_cpu')}, {env.get('cpu_count')} cores, torch {env.get('torch')}, "
        f"load average at the start {env.get('load_average_1min')}, {env.get('date')}, "
        f"commit {env.get('git_commit')}"
    )


def dice_cell(entry: dict | None) -> str:
    if not entry or not entry.get("dice", {}).get("n"):
        return "–"
    d = entry["dice"]
    return f"{d['mean']:.3f} ± {d['std']:.3f} (median {d['median']:.3f})"


def machine_line(res: dict) -> str:
    """The machine and threads a benchmark ran with, as its section's first sentence."""
    return (
        f"Machine: {env_line(res['environment'])}. "
        f"Threads per method: {res['settings']['threads']}. "
    )
