"""The speed and memory tables of docs/benchmarks.md, from results/speed.json."""

from __future__ import annotations

import numpy as np
from common import METHOD_NAMES as NAMES
from common import fmt, md_table
from render_common import machine_line


def speed_section(res: dict | None) -> list[str]:
    out = ["## Speed and memory (`benchmarks/speed.py`)", ""]
    if res is None:
        return out + ["Not run yet: `python benchmarks/speed.py`.", ""]
    from speed import render_table

    s = res["settings"]
    out += [
        machine_line(res) + f"Images: {s['images']}.",
        "",
        f"- 3D model: {s['model_3d']}",
        f"- 2D model: {s['model_2d']}",
        f"- ANTs: {s['ants']}; elastix: {s['elastix']}",
        "",
        "Columns: *forward* = the network alone on the model grid (median of "
        f"{s['repeats']}); *network only*, *fast*, *recommended* = end to end (read both files, "
        "affine pre-alignment, network, then no engine or the engine's `fast` or `recommended` "
        "preset, field on the fixed grid, warped image, similarity heatmaps, write all outputs; "
        "timed inside the process, after imports); *CLI* = the whole `deepsim register` command "
        "with its defaults (`recommended`; interpreter start, imports, overview figure); "
        "*peak* = largest `ru_maxrss` of our cases; ANTs/elastix: registration call only, "
        "with (×) = their time / our `recommended` end-to-end time.",
        "",
        render_table(res),
        "",
    ]
    loads = [r.get("load_1min") for r in res["rows"] if r.get("load_1min") is not None]
    if loads:
        out += [
            f"The machine was shared while this ran: 1-minute load average {min(loads):.1f} to "
            f"{max(loads):.1f} on {res['environment'].get('cpu_count')} cores across the cases "
            "(per case in `benchmarks/results/speed.json`), so absolute times are pessimistic; "
            "ours and the classical tools ran in the same run under the same conditions.",
            "",
        ]
    # where the end-to-end time goes
    stage_rows = []
    for r in res["rows"]:
        if r.get("case") != "e2e" or "stages_s" not in r:
            continue
        st = r["stages_s"]
        stage_rows.append(
            [r["size"], r["case"], fmt(r["read_s"], 2)]
            + [fmt(st.get(k), 2) for k in ("affine", "resample", "network", "field", "warp")]
            + [fmt(st.get("heatmaps"), 2), fmt(r["write_s"], 2), fmt(r["time_s"], 2)]
        )
    if stage_rows:
        out += [
            "Where the `recommended` end-to-end time goes (seconds; *network* includes the engine; "
            "*write* = all NIfTI outputs, gzip-compressed):",
            "",
            md_table(
                [
                    "size",
                    "case",
                    "read + load model",
                    "affine",
                    "resample",
                    "network",
                    "field",
                    "warp",
                    "heatmaps",
                    "write",
                    "total",
                ],
                stage_rows,
            ),
            "",
        ]
    # classical ratios against each of our timings
    ratio_rows = []
    for line in res["table"]:
        e2e = next(
            (r for r in res["rows"] if r["size"] == line["size"] and r["case"] == "e2e"), None
        )
        reg = e2e.get("register_s") if e2e and "error" not in e2e else None
        for tool in ("ants_syn", "elastix"):
            t = line.get(tool)
            if t is None:
                continue
            ratio_rows.append(
                [
                    line["size"],
                    NAMES[tool],
                    fmt(t, 1),
                    fmt(t / line["forward"] if line["forward"] else None, 1),
                    fmt(t / reg if reg else None, 1),
                    fmt(t / line["e2e"] if line["e2e"] else None, 1),
                    fmt(t / line["cli"] if line["cli"] else None, 1),
                ]
            )
    if ratio_rows:
        out += [
            "Speed-up of ours over the classical tools (their registration time divided by ours; "
            "*register()* = our registration call without reading and writing files, the closest "
            "match to what is timed for ANTs and elastix):",
            "",
            md_table(
                [
                    "size",
                    "tool",
                    "tool s",
                    "÷ our forward",
                    "÷ our register()",
                    "÷ our end to end",
                    "÷ our CLI",
                ],
                ratio_rows,
            ),
            "",
        ]
    rows = []
    for key, t in res["targets"].items():
        label = {
            "e2e_160x192x224_s": "160×192×224 pair end to end (s)",
            "e2e_2d_256_s": "2D 256×256 end to end (s)",
            "peak_memory_gb": "peak memory (GB)",
        }[key]
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        by = ""
        if t["met"] is False:
            by = f"by {t['value'] - t['target']:.2f} ({t['value'] / t['target']:.1f}× the target)"
        rows.append(
            [label, fmt(t["target"], 1), fmt(t["value"], 2), fmt(t.get("cli_value"), 2), met, by]
        )
    out += [
        "Targets (`recommended`; the 160×192×224 goal is issue 10's, the 2D one issue 2's, set "
        "for the network alone):",
        "",
        md_table(["target", "goal", "measured", "CLI", "status", "missed by"], rows),
        "",
    ]
    by_size = {r["size"]: r for r in res["table"]}
    grid = [k for k in by_size if not k.startswith("2D")]
    if len(grid) > 1:
        base = by_size[grid[0]]
        growth = []
        for k in grid:
            r = by_size[k]
            voxels = float(np.prod(res["settings"]["sizes_xyz_1mm"][k]))
            growth.append(
                [
                    k,
                    f"{voxels / 1e6:.2f} M",
                    fmt(
                        r["forward"] / base["forward"]
                        if r["forward"] and base["forward"]
                        else None,
                        1,
                    ),
                    fmt(r["e2e"] / base["e2e"] if r["e2e"] and base["e2e"] else None, 1),
                ]
            )
        out += [
            f"How time grows with the image (relative to {grid[0]}; the model grid is 2 mm, so "
            "the network sees 1/8 of the voxels):",
            "",
            md_table(["size", "voxels", "forward ×", "end to end ×"], growth),
            "",
        ]
    return out
