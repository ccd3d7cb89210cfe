"""The tables comparing DeepSim with the classical tools, from results/classical.json."""

from __future__ import annotations

from common import METHOD_NAMES as NAMES
from common import fmt, md_table
from render_common import SETS, dice_cell, env_line, machine_line


def _machines(records: list[dict]) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(method, set) -> (the machine and run its records were measured in, as text; its CPU).
    (None, None): not recorded (files from before records named it); ("several", None) when
    the records of one method and set differ."""
    out: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for r in records:
        m = r.get("machine")
        value = (
            (f"{m['host_cpu']}, {m['date']}, commit {m['git_commit']}", m["host_cpu"])
            if m
            else (None, None)
        )
        key = (r["method"], r["set"])
        out[key] = value if out.get(key, value) == value else ("several", None)
    return out


def classical_section(res: dict | None) -> list[str]:
    out = ["## DeepSim against ANTs, elastix and ConvexAdam (`benchmarks/classical.py`)", ""]
    if res is None:
        return out + ["Not run yet: `python benchmarks/classical.py`.", ""]
    s = res["settings"]
    out += [
        machine_line(res)
        + f"Grid: {s['grid']} (the phantom: its own oblique grid). Pairs held out of all "
        f"training: {s['semi_synthetic_pairs']} semi-synthetic mni2009a pairs (seed "
        f"{s['seed']}), real inter-template pairs, a whole-head pair and a non-brain pair.",
        "",
    ]
    machines = _machines(res["records"])
    if len({label for label, _ in machines.values()}) > 1:
        out += [
            "The records were measured in several runs (`--merge`); **time ×** compares a method "
            "with DeepSim recommended only where both ran on the same kind of CPU:",
            "",
        ]
        for label in sorted({label for label, _ in machines.values()}, key=str):
            groups = sorted(
                f"{NAMES.get(m, m)} ({SETS.get(s, s)})"
                for (m, s), (text, _) in machines.items()
                if text == label and m != "identity"
            )
            out.append(f"- {label}: {', '.join(groups)}")
        out.append("")
    elif res.get("merged_from"):
        mf = res["merged_from"]
        out += [
            f"Rows of {', '.join(NAMES.get(m, m) for m in mf['methods'])} come from an earlier "
            f"run ({env_line(mf['environment'])}) and were merged (`--merge`).",
            "",
        ]
    ants = "; ".join(f"{NAMES.get(m, m)}: `{call}`" for m, call in s["ants"].items())
    out += [f"- DeepSim: {s['deepsim']}; model: {s['model']}", f"- ANTs: {ants}"]
    out += [f"- {k}: {s[k]}" for k in ("elastix", "elastix_brain", "convexadam") if k in s]
    out += [
        f"- runtime: {s['runtime']}; **time ×**: the method's mean time over DeepSim "
        "recommended's on the same pairs, on the same kind of CPU (merged runs are listed above)",
        f"- folding: {s['folding']}; EPE: {s['epe']}",
        "",
    ]
    for note in res.get("notes", []):
        out += [f"> {note}", ""]
    methods = list(res["summary"])
    header = [
        "method",
        "set",
        "mean fg Dice ± sd",
        "EPE mm",
        "folding %",
        "std log\\|J\\|",
        "time s",
        "time ×",
    ]
    rows = []
    sets = [k for k in res["summary"]["identity"] if k != "all"]
    for test_set in sets:
        for m in methods:
            e = res["summary"][m].get(test_set)
            if not e:
                continue
            ours = res["summary"].get("deepsim", {}).get(test_set)
            ratio = None
            cpu = machines.get((m, test_set), (None, None))[1]
            same = cpu == machines.get(("deepsim", test_set), (None, None))[1]
            if ours and m != "identity" and ours["runtime_s"]["mean"] and same:
                ratio = e["runtime_s"]["mean"] / ours["runtime_s"]["mean"]
            rows.append(
                [
                    NAMES.get(m, m),
                    SETS.get(test_set, test_set),
                    dice_cell(e),
                    fmt(e.get("epe_mm"), 2),
                    fmt(e["folding_percent"], 4),
                    fmt(e["std_log_jacobian"], 3),
                    fmt(e["runtime_s"].get("mean"), 1),
                    fmt(ratio, 2),
                ]
            )
    out += [md_table(header, rows), ""]
    # per pair
    rows = []
    for r in res["records"]:
        rows.append(
            [
                r["pair"],
                NAMES.get(r["method"], r["method"]),
                r.get("error", fmt(r.get("mean_dice"), 3)),
                " / ".join(fmt(v, 3) for _, v in sorted(r.get("dice", {}).items())),
                fmt(r.get("epe_mm"), 2),
                fmt(r.get("folding_percent"), 4),
                fmt(r.get("runtime_s"), 1),
                fmt(r.get("field_check"), 4),
            ]
        )
    out += [
        "<details><summary>Per pair (Dice per label in label order; field check = mean |tool's "
        "own warped image − moving image resampled through our converted field| / intensity "
        "range, inside the brain)</summary>",
        "",
        md_table(
            ["pair", "method", "Dice", "per label", "EPE mm", "folding %", "time s", "field check"],
            rows,
        ),
        "",
        "</details>",
        "",
    ]
    if res.get("sanity_translation"):
        rows = [
            [
                NAMES.get(r["method"], r["method"]),
                str(r.get("median_disp_mm", "–")),
                fmt(r.get("epe_mm"), 2),
                fmt(r.get("mean_dice"), 3),
                fmt(r.get("field_check"), 4),
            ]
            for r in res["sanity_translation"]
        ]
        out += [
            "Sanity check of the field conversion (moving = fixed shifted by a known translation "
            f"t; every method should return d(x) = t): {res['sanity_translation'][0]['pair']}.",
            "",
            md_table(
                ["method", "median d in brain (mm, LPS)", "EPE mm", "Dice", "field check"], rows
            ),
            "",
        ]
    return out
