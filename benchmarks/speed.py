"""Speed and peak memory of ``deepsim register`` against ANTs SyN and elastix, on this machine.

Per 3D size (1 mm volumes: 64^3, 96 x 112 x 96, 160 x 192 x 224 in x, y, z), each case runs in a
fresh subprocess so its peak memory (``ru_maxrss``) is its own:

* ``forward``: the registration network alone on the model grid (median of ``--repeats``);
* ``e2e``: read both files -> :func:`deepsim.register.register` with the default ``recommended``
  preset (robust affine, network, the multi-resolution engine, field on the fixed grid, warped
  image, similarity heatmaps) -> :func:`write_outputs`, timed inside the process (after imports);
* ``e2e_fast``: the same with the ``fast`` preset; ``e2e_net``: the network alone (no engine);
* ``cli``: the whole ``deepsim register`` command as a user runs it (interpreter start, imports,
  overview figure), wall clock of the subprocess;
* ``ants_syn_s`` / ``elastix_brain``: ANTs ``antsRegistrationSyN[s]`` and elastix (affine + the
  published brain B-spline settings of ``benchmarks/elastix/brain_bspline.txt``) on the same pair
  with the same thread count, registration call only (``--classical-sizes``).

Plus 2D 256 x 256 end to end. The images are real anatomy (fsaverage -> MNI 2009a) resampled to
1 mm; the model is the shipped one when it exists, else the training run's, else the network of
the model config with random weights (same compute, said in the output).

Usage::

    python benchmarks/speed.py            # full run, writes benchmarks/results/speed.json
    python benchmarks/speed.py --quick    # smoke run: 64^3 and 2D only, no classical tools
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, environment, fmt, md_table, write_json  # noqa: E402

from deepsim.api import resolve_model  # noqa: E402

SIZES = {"64^3": (64, 64, 64), "96x112x96": (96, 112, 96), "160x192x224": (160, 192, 224)}
TARGETS = {"e2e_160x192x224_s": 15.0, "e2e_2d_256_s": 0.5, "peak_memory_gb": 4.0}
CASES = {"e2e_net": {"io_steps": 0}, "e2e_fast": {"preset": "fast"}, "e2e": {}}
"""The end-to-end variants: register() options of each."""


# --------------------------------------------------------------------------------------------
# inputs


def make_pair_3d(size_xyz: tuple[int, int, int], folder: Path) -> tuple[Path, Path]:
    """fsaverage (moving) and MNI 2009a (fixed) resampled to 1 mm on a centred grid of
    ``size_xyz`` voxels (x, y, z), LPS direction of the common grid."""
    import SimpleITK as sitk

    from deepsim.geometry import Grid, Image, to_sitk
    from deepsim.training.anatomy import load_anatomy, reference_image

    ref = reference_image()
    grid = Grid.from_sitk(ref)
    centre = grid.corners().mean(axis=0)
    out = sitk.Image(list(size_xyz), sitk.sitkFloat32)
    out.SetSpacing((1.0, 1.0, 1.0))
    out.SetDirection(ref.GetDirection())
    direction = np.asarray(ref.GetDirection()).reshape(3, 3)
    out.SetOrigin(tuple(centre - direction @ ((np.asarray(size_xyz) - 1) / 2.0)))
    paths = []
    for name, role in (("mni2009a", "fixed"), ("fsaverage", "moving")):
        image, _, _ = load_anatomy(name)
        src = to_sitk(Image(image.astype(np.float32), grid))
        res = sitk.Resample(src, out, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        path = folder / f"{role}_{'x'.join(map(str, size_xyz))}.nii.gz"
        sitk.WriteImage(res, str(path))
        paths.append(path)
    return paths[0], paths[1]


def make_pair_2d(folder: Path) -> tuple[Path, Path]:
    import SimpleITK as sitk
    import torch

    from deepsim.training.synth import SynthConfig, synth_pair

    gen = torch.Generator().manual_seed(5)
    pair = synth_pair((256, 256), gen, SynthConfig())
    paths = []
    for role in ("fixed", "moving"):
        img = sitk.GetImageFromArray(pair[role][0, 0].numpy().astype(np.float32))
        path = folder / f"{role}_256x256.nii.gz"
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths[0], paths[1]


# --------------------------------------------------------------------------------------------
# one case, in a child process


def _peak_gb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # KiB -> GiB on Linux


def child(case: dict) -> dict:
    threads = int(case["threads"])
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    kind = case["kind"]
    if kind == "cli":
        cmd = [
            str(Path(sys.executable).parent / "deepsim"),
            "register",
            case["fixed"],
            case["moving"],
            "--out",
            case["out"],
            "--device",
            "cpu",
            "--model",
            case["model"],
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return {"time_s": time.perf_counter() - t0, "peak_gb": _peak_gb(resource.RUSAGE_CHILDREN)}
    import torch

    torch.set_num_threads(threads)
    if kind in ("ants_syn_s", "elastix_brain"):
        return _classical(kind, case, threads)
    from deepsim.api import RegistrationOptions
    from deepsim.geometry import model_grid, read_image, resample
    from deepsim.modelio import load_model
    from deepsim.outputs import write_outputs
    from deepsim.register import register

    if kind == "forward":
        model = load_model(case["model"])
        fixed = read_image(case["fixed"])
        pre = model.preprocessing
        grid = model_grid(fixed.grid, pre.spacing, pre.multiple, pre.orientation, pre.max_voxels)
        x = torch.from_numpy(resample(fixed, grid).array)[None, None].float()
        net = model.registration.eval()
        times = []
        with torch.inference_mode():
            for _ in range(int(case["repeats"]) + 1):  # the first call warms up
                t0 = time.perf_counter()
                net(x, x)
                times.append(time.perf_counter() - t0)
        return {
            "time_s": float(np.median(times[1:])),
            "times_s": times[1:],
            "model_grid": list(grid.shape),
            "peak_gb": _peak_gb(),
        }
    # e2e: read -> register -> write, timed in-process after imports
    t0 = time.perf_counter()
    fixed, moving = read_image(case["fixed"]), read_image(case["moving"])
    model = load_model(case["model"], spatial_dims=fixed.grid.spatial_dims)
    t_read = time.perf_counter() - t0
    opts = RegistrationOptions(device="cpu", **case.get("options", {}))
    result = register(fixed, moving, model, opts)
    t_reg = time.perf_counter() - t0 - t_read
    write_outputs(result, case["out"], figure=False)
    total = time.perf_counter() - t0
    return {
        "time_s": total,
        "read_s": t_read,
        "register_s": t_reg,
        "write_s": total - t_read - t_reg,
        "stages_s": result.summary.timings_s,
        "model_grid": result.summary.model_grid_shape,
        "peak_gb": _peak_gb(),
    }


def _classical(kind: str, case: dict, threads: int) -> dict:
    if kind == "ants_syn_s":
        import ants

        ants.config._random_seed = 1
        fixed, moving = ants.image_read(case["fixed"]), ants.image_read(case["moving"])
        t0 = time.perf_counter()
        ants.registration(fixed, moving, type_of_transform="antsRegistrationSyN[s]")
        return {"time_s": time.perf_counter() - t0, "peak_gb": _peak_gb()}
    import itk
    from classical import ELASTIX_BRAIN

    fixed, moving = itk.imread(case["fixed"], itk.F), itk.imread(case["moving"], itk.F)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    params.AddParameterFile(str(ELASTIX_BRAIN))
    t0 = time.perf_counter()
    itk.elastix_registration_method(
        fixed, moving, parameter_object=params, log_to_console=False, number_of_threads=threads
    )
    return {"time_s": time.perf_counter() - t0, "peak_gb": _peak_gb()}


def run_case(case: dict, timeout: float) -> dict:
    """Run one case in a fresh interpreter; returns its JSON result (or the error)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(case["threads"])}
    cmd = [sys.executable, __file__, "--child", json.dumps(case)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64^3 and 2D only, no ANTs/elastix")
    parser.add_argument("--repeats", type=int, default=3, help="forward-pass repeats")
    parser.add_argument("--threads", type=int, default=2, help="threads for every method")
    parser.add_argument(
        "--classical-sizes", default="96x112x96", help="sizes for ANTs/elastix (comma separated)"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per case, seconds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    out_path = args.out or RESULTS / ("speed_quick.json" if args.quick else "speed.json")
    sizes = {"64^3": SIZES["64^3"]} if args.quick else SIZES
    classical_sizes = [] if args.quick else [s for s in args.classical_sizes.split(",") if s]
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="deepsim-speed-") as tmp:
        folder = Path(tmp)
        model3d, model2d = resolve_model("brain-3d", 3), resolve_model("general-2d", 2)
        note3d, note2d = (f"{m.relative_to(ROOT)} (trained)" for m in (model3d, model2d))
        print(f"3D model: {note3d}\n2D model: {note2d}", flush=True)
        cases = []
        for label, size in sizes.items():
            fixed, moving = make_pair_3d(size, folder)
            common = {
                "size": label,
                "fixed": str(fixed),
                "moving": str(moving),
                "model": str(model3d),
                "threads": args.threads,
                "out": str(folder / f"out_{label}"),
            }
            cases.append({**common, "kind": "forward", "repeats": args.repeats})
            cases += [{**common, "kind": k, "options": o} for k, o in CASES.items()]
            cases.append({**common, "kind": "cli"})
            if label in classical_sizes:
                cases.append({**common, "kind": "ants_syn_s"})
                cases.append({**common, "kind": "elastix_brain"})
        fixed2d, moving2d = make_pair_2d(folder)
        common2d = {
            "size": "2D 256x256",
            "fixed": str(fixed2d),
            "moving": str(moving2d),
            "model": str(model2d),
            "threads": args.threads,
            "out": str(folder / "out_2d"),
        }
        cases.append({**common2d, "kind": "forward", "repeats": args.repeats})
        cases += [{**common2d, "kind": k, "options": o} for k, o in CASES.items()]
        cases.append({**common2d, "kind": "cli"})
        for case in cases:
            kind = "e2e" if case["kind"] in CASES else case["kind"]
            load = os.getloadavg()[0]
            res = run_case({**case, "kind": kind}, args.timeout)
            row = {"size": case["size"], "case": case["kind"], "load_1min": round(load, 2), **res}
            rows.append(row)
            print(
                f"{row['size']:>12} {row['case']:>9}: "
                + (
                    row["error"]
                    if "error" in row
                    else f"{row['time_s']:7.2f} s  peak {row['peak_gb']:.2f} GB"
                ),
                flush=True,
            )

    def get(size, case):
        for r in rows:
            if r["size"] == size and r["case"] == case and "error" not in r:
                return r
        return None

    table = []
    for size in list(sizes) + ["2D 256x256"]:
        e2e = get(size, "e2e")
        line = {"size": size}
        for case in ("forward", *CASES, "cli", "ants_syn_s", "elastix_brain"):
            r = get(size, case)
            line[case] = r["time_s"] if r else None
            line[f"{case}_peak_gb"] = r["peak_gb"] if r else None
        for tool in ("ants_syn_s", "elastix_brain"):
            line[f"{tool}_ratio"] = (
                line[tool] / e2e["time_s"] if line[tool] is not None and e2e else None
            )
            line[f"{tool}_ratio_cli"] = (
                line[tool] / line["cli"] if line[tool] is not None and line["cli"] else None
            )
        line["model_grid"] = (get(size, "forward") or {}).get("model_grid")
        table.append(line)
    peak = max(
        (
            r["peak_gb"]
            for r in rows
            if "peak_gb" in r and r["case"] not in ("ants_syn_s", "elastix_brain")
        ),
        default=None,
    )
    big = get("160x192x224", "e2e")
    two = get("2D 256x256", "e2e")
    targets = {
        "e2e_160x192x224_s": {
            "target": TARGETS["e2e_160x192x224_s"],
            "value": big["time_s"] if big else None,
            "cli_value": (get("160x192x224", "cli") or {}).get("time_s"),
        },
        "e2e_2d_256_s": {
            "target": TARGETS["e2e_2d_256_s"],
            "value": two["time_s"] if two else None,
            "cli_value": (get("2D 256x256", "cli") or {}).get("time_s"),
        },
        "peak_memory_gb": {"target": TARGETS["peak_memory_gb"], "value": peak},
    }
    for t in targets.values():
        t["met"] = None if t["value"] is None else bool(t["value"] <= t["target"])
    result = {
        "benchmark": "speed",
        "quick": args.quick,
        "settings": {
            "threads": args.threads,
            "repeats": args.repeats,
            "sizes_xyz_1mm": {k: list(v) for k, v in sizes.items()},
            "classical_sizes": classical_sizes,
            "images": "MNI 2009a (fixed) and fsaverage (moving), resampled to 1 mm; 2D: a "
            "synthetic 256x256 pair",
            "model_3d": note3d,
            "model_2d": note2d,
            "ants": "ants.registration(type_of_transform='antsRegistrationSyN[s]')",
            "elastix": "default affine map + benchmarks/elastix/brain_bspline.txt",
            "deepsim": "e2e: the recommended preset (the default); e2e_fast: the fast preset; "
            "e2e_net: the network alone",
        },
        "rows": rows,
        "table": table,
        "targets": targets,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "environment": environment(),
    }
    write_json(out_path, result)
    print()
    print(render_table(result))
    print(f"\nwrote {out_path}")
    return 0


def render_table(result: dict) -> str:
    """The markdown speed table (also used by report.py)."""
    header = [
        "size (1 mm)",
        "model grid",
        "forward s",
        "network only s",
        "fast s",
        "recommended s",
        "CLI s",
        "peak GB",
        "ANTs SyN[s] s (×)",
        "elastix brain s (×)",
    ]
    rows = []

    def tool(line: dict, name: str) -> str:
        if line.get(name) is None:
            return "–"
        return f"{line[name]:.1f} ({fmt(line[f'{name}_ratio'], 1)}×)"

    for line in result["table"]:
        peaks = [line.get(f"{c}_peak_gb") for c in ("forward", *CASES, "cli")]
        peaks = [p for p in peaks if p is not None]
        rows.append(
            [
                line["size"],
                "×".join(map(str, line["model_grid"] or [])) or "–",
                fmt(line["forward"], 3),
                fmt(line.get("e2e_net"), 2),
                fmt(line.get("e2e_fast"), 2),
                fmt(line.get("e2e"), 2),
                fmt(line["cli"], 2),
                fmt(max(peaks), 2) if peaks else "–",
                tool(line, "ants_syn_s"),
                tool(line, "elastix_brain"),
            ]
        )
    return md_table(header, rows)


if __name__ == "__main__":
    sys.exit(main())
