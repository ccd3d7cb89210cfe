"""DeepSim against the classical tools (ANTs, elastix, ConvexAdam) on the same held-out 3D pairs.

Methods (each returns the complete fixed -> moving mapping as a displacement on the fixed grid):

* ``deepsim``, ``deepsim_fast``, ``deepsim_best``: :func:`deepsim.register.register` with the
  shipped ``brain-3d`` model on the brain pairs and ``general-3d`` on the non-brain pair
  (:data:`NON_BRAIN`): robust affine + network + the engine's ``recommended``, ``fast`` and
  ``best`` presets; ``deepsim_net``: the network alone;
* ANTs (antspyx) as its users run it: ``ants_syn_s`` and ``ants_synquick_s`` (the
  ``antsRegistrationSyN[Quick].sh`` presets), ``ants_syncc`` (SyN with CC; not in the default
  list: ``ants_syn_s`` is already CC SyN down to full resolution), and ``ants_syn``, the antspyx
  default ``SyN`` (Mattes MI, no full-resolution level), labelled as such;
* ``elastix_brain``: itk-elastix, default affine map then the published brain B-spline settings
  in ``benchmarks/elastix/brain_bspline.txt`` (elastix model zoo Par0035); ``elastix``: the
  default affine and B-spline maps;
* ``convexadam``: ConvexAdam (PyPI ``convexadam``), MIND, its defaults, CPU.

Every method goes through ONE evaluation function (:func:`evaluate`): moving labels warped by
nearest neighbour through the displacement (SimpleITK), Dice per label and mean foreground Dice,
folding % and std log|J| of the signed Jacobian of the field in mm, endpoint error in mm against
the known displacement (semi-synthetic and phantom pairs), and runtime.

How the tools' transforms become fields, one way for all: the LPS coordinates of a padded copy of
the moving grid are written as three scalar images and resampled onto the fixed grid by each tool
itself (linear interpolation, which is exact for a linear function). That gives ``T(x)``, the
moving point each tool pulls fixed point ``x`` from, so ``d(x) = T(x) - x`` in LPS mm, the
convention of ``deepsim register``'s ``displacement.nii.gz``. A translation sanity check (a known
shift of the moving image) runs first and is stored with the results, and every pair records how
well each tool's own warped image matches the moving image resampled through the converted field.

Pairs (all held out of the model's training), on the common 2 mm grid (96 x 112 x 96) unless
stated: semi-synthetic ``mni2009a`` pairs with known deformations; the real inter-template pairs
fsaverage <-> mni2009a (tissue classes) and mni2009a <-> mni6asym (brain mask); a whole-head pair
(fsaverage ``T1.mgz`` with skull and scalp -> the skull-stripped mni2009a, brain-mask Dice); and
a non-brain pair (a random-shape phantom under a known 4 mm smooth motion on an oblique,
anisotropic grid, :mod:`phantom_gate`).

Usage::

    python benchmarks/classical.py --pairs 2 --template-pairs 1
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS,
    ROOT,
    environment,
    machine_label,
    read_json,
    summary_stats,
    write_json,
)

log = logging.getLogger("classical")

PAD = 12  # voxels of padding of the coordinate images beyond the moving grid


# --------------------------------------------------------------------------------------------
# conversions


def _write(image, path: Path) -> Path:
    from deepsim.geometry import write_image

    write_image(image, path)
    return path


def coordinate_images(grid, folder: Path) -> list[Path]:
    """Three images on ``grid`` padded by ``PAD`` voxels, holding the LPS x, y, z of each voxel."""
    from deepsim.geometry import Grid, Image

    d = grid.spatial_dims
    m = grid.index_to_lps.copy()
    m[:d, d] = m[:d, d] - grid.linear @ np.full(d, PAD)
    padded = Grid(tuple(n + 2 * PAD for n in grid.shape), m)
    pts = padded.world_points().astype(np.float32)
    return [_write(Image(pts[..., i], padded), folder / f"coord{i}.nii.gz") for i in range(d)]


def field_from_coordinates(mapped: list[np.ndarray], fixed_grid) -> np.ndarray:
    """``d(x) = T(x) - x``, ``(*shape, D)`` LPS mm, from the resampled coordinate images."""
    t = np.stack(mapped, axis=-1).astype(np.float64)
    return (t - fixed_grid.world_points()).astype(np.float32)


def gt_field_mm(disp: np.ndarray, grid) -> np.ndarray:
    """A ``(D, *shape)`` voxel displacement (tensor order) as ``(*shape, D)`` LPS mm."""
    return np.tensordot(grid.linear, disp, axes=(1, 0)).transpose(*range(1, disp.ndim), 0)


# --------------------------------------------------------------------------------------------
# the methods


ANTS_PRESETS = {
    "ants_syn": "SyN",  # antspyx default: Mattes MI, (40, 20, 0), no full-resolution level
    "ants_synquick_s": "antsRegistrationSyNQuick[s]",
    "ants_syn_s": "antsRegistrationSyN[s]",
    "ants_syncc": "SyNCC",
}
"""ANTs as its users run it: the antsRegistrationSyN*.sh presets (rigid + affine + SyN, CC radius
2 down to full resolution for SyN[s]; MI and no full-resolution level for Quick) and SyNCC, plus
the antspyx default ``SyN`` row kept and labelled as such."""


def run_ants(
    fixed_path: Path, moving_path: Path, coords: list[Path], seed: int, transform: str = "SyN"
):
    import ants

    ants.config._random_seed = seed  # fixed sampling seed (threads may still vary results)
    fixed = ants.image_read(str(fixed_path))
    moving = ants.image_read(str(moving_path))
    t0 = time.perf_counter()
    reg = ants.registration(fixed, moving, type_of_transform=transform)
    runtime = time.perf_counter() - t0
    mapped = [
        ants.apply_transforms(
            fixed, ants.image_read(str(c)), reg["fwdtransforms"], interpolator="linear"
        ).numpy()
        for c in coords
    ]
    # ants.numpy() is (x, y, z); deepsim arrays are (z, y, x)
    mapped = [m.transpose(*reversed(range(m.ndim))) for m in mapped]
    warped = reg["warpedmovout"].numpy()
    return mapped, warped.transpose(*reversed(range(warped.ndim))), runtime


ELASTIX_BRAIN = Path(__file__).resolve().parent / "elastix" / "brain_bspline.txt"


def run_elastix(
    fixed_path: Path, moving_path: Path, coords: list[Path], threads: int, brain: bool = False
):
    """elastix's default affine map, then the default B-spline map or (``brain``) the published
    brain B-spline settings of :data:`ELASTIX_BRAIN`."""
    import itk

    fixed = itk.imread(str(fixed_path), itk.F)
    moving = itk.imread(str(moving_path), itk.F)
    params = itk.ParameterObject.New()
    params.AddParameterMap(params.GetDefaultParameterMap("affine"))
    if brain:
        params.AddParameterFile(str(ELASTIX_BRAIN))
    else:
        bspline = params.GetDefaultParameterMap("bspline")
        # The default B-spline map adds a TransformBendingEnergyPenalty metric; with it,
        # itk-elastix 0.25.4 segfaults here in the ASGD automatic parameter estimation
        # ("Sampling gradients"), so this stage runs on Mattes MI alone (else the default map).
        bspline["Metric"] = ["AdvancedMattesMutualInformation"]
        bspline["Registration"] = ["MultiResolutionRegistration"]
        params.AddParameterMap(bspline)
    t0 = time.perf_counter()
    warped, transform = itk.elastix_registration_method(
        fixed, moving, parameter_object=params, log_to_console=False, number_of_threads=threads
    )
    runtime = time.perf_counter() - t0
    # resample with linear interpolation (exact for the linear coordinate images)
    for i in range(transform.GetNumberOfParameterMaps()):
        transform.SetParameter(i, "FinalBSplineInterpolationOrder", "1")
        transform.SetParameter(i, "DefaultPixelValue", "0")
    mapped = []
    for c in coords:
        coord = itk.imread(str(c), itk.F)
        out = itk.transformix_filter(coord, transform, log_to_console=False)
        mapped.append(np.asarray(itk.array_from_image(out)))
    return mapped, np.asarray(itk.array_from_image(warped)), runtime


NON_BRAIN = "general-3d"  # the model for the non-brain pair (the 3D default)

DEEPSIM_IO = {
    "deepsim": ("recommended", None, True),
    "deepsim_fast": ("fast", None, True),
    "deepsim_best": ("best", None, True),
    "deepsim_net": ("recommended", 0, True),
    "deepsim_affine": ("recommended", 0, False),
}
"""(preset, io_steps, network) per DeepSim variant: the engine's presets, the network alone, and
the robust affine alone (the reference for "never worse than its affine")."""


def run_convexadam(fixed, moving):
    """ConvexAdam (PyPI ``convexadam``): MIND features, its defaults, CPU float32. Its field is in
    voxels of the input arrays' axes (``x + u(x)`` sampling), converted to LPS mm here."""
    import torch
    from convexAdam.convex_adam_MIND import convex_adam_pt

    t0 = time.perf_counter()
    u = convex_adam_pt(
        fixed.array.astype(np.float32),
        moving.array.astype(np.float32),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    runtime = time.perf_counter() - t0
    disp = np.asarray(u, np.float32) @ fixed.grid.linear.T  # voxel steps -> LPS mm
    from deepsim.register import warp_image

    warped = warp_image(moving, fixed.grid, disp, "linear").array
    return disp, warped, runtime


def run_deepsim(model, fixed, moving, variant: tuple[str, int | None]):
    from deepsim.api import RegistrationOptions
    from deepsim.register import register

    preset, io_steps, network = variant
    opts = RegistrationOptions(
        device="cpu",
        preset=preset,
        io_steps=io_steps,
        network=network,
        heatmaps=False,
        warped=True,
    )
    t0 = time.perf_counter()
    result = register(fixed, moving, model, opts)
    runtime = time.perf_counter() - t0
    return result.displacement, result.warped.array, runtime


# --------------------------------------------------------------------------------------------
# the one evaluation


def evaluate(
    fixed_labels,
    moving_labels,
    displacement: np.ndarray,
    runtime_s: float,
    gt_mm: np.ndarray | None = None,
) -> dict:
    """Quality of one fixed -> moving displacement ``(*fixed.shape, D)`` in LPS mm.

    :func:`deepsim.scoring.score_on_fixed_grid_mm` (Dice of the warped moving labels, folding %
    and std log|J| on the whole fixed grid, endpoint error in mm over the fixed foreground when
    ``gt_mm`` is known), stored under this benchmark's result keys.
    """
    from deepsim.scoring import score_on_fixed_grid_mm

    score = score_on_fixed_grid_mm(fixed_labels, moving_labels, displacement, gt_mm)
    out = {
        "dice": score.dice_per_label,
        "mean_dice": score.mean_dice,
        "folding_percent": score.folding_percent_fixed_grid,
        "std_log_jacobian": score.std_log_jacobian_fixed_grid,
        "runtime_s": round(float(runtime_s), 3),
    }
    if score.endpoint_error_mm is not None:
        out["epe_mm"] = score.endpoint_error_mm
    return out


def field_check(moving, fixed_grid, displacement, tool_warped: np.ndarray, mask) -> float:
    """Mean |tool's warped image - moving resampled through the converted field| in the brain,
    relative to the moving intensity range: ~0 when the conversion matches the tool."""
    from deepsim.register import warp_image

    ours = warp_image(moving, fixed_grid, displacement, "linear").array
    scale = float(np.ptp(moving.array)) or 1.0
    return float(np.abs(ours - tool_warped)[mask].mean() / scale)


# --------------------------------------------------------------------------------------------


def _tensor_pair(set_name: str, pair_id: str, p: dict, grid) -> dict:
    """A benchmark pair from a generator's ``(1, 1, *shape)`` tensors on ``grid``; the known
    displacement ``p["disp"]`` (fixed voxels), when present, becomes ``gt_mm``."""
    from deepsim.geometry import Image

    def labels(key):
        return Image(p[key][0, 0].numpy().astype(np.int16), grid)

    return {
        "set": set_name,
        "id": pair_id,
        "fixed": Image(p["fixed"][0, 0].numpy(), grid),
        "moving": Image(p["moving"][0, 0].numpy(), grid),
        "fixed_labels": labels("fixed_labels"),
        "moving_labels": labels("moving_labels"),
        "gt_mm": gt_field_mm(p["disp"][0].numpy(), grid) if "disp" in p else None,
    }


def load_pairs(args) -> list[dict]:
    from deepsim.geometry import Grid
    from deepsim.training.anatomy import available, reference_image
    from deepsim.training.benchdata import semi_synthetic_pairs, template_pairs

    grid = Grid.from_sitk(reference_image())
    pairs = []
    for p in semi_synthetic_pairs("mni2009a", args.pairs, args.seed, scheme="tissue"):
        pairs.append(_tensor_pair("semi_synthetic", f"mni2009a-{p['index']}", p, grid))
    names = [n for n in ("fsaverage", "mni2009a", "mni6asym") if available(n)]
    combos = [("fsaverage", "mni2009a"), ("mni2009a", "mni6asym")]
    for a, b in combos:
        if a not in names or b not in names:
            continue
        for p in template_pairs([a, b])[: args.template_pairs]:
            name = f"{p['moving_name']}->{p['fixed_name']} ({p['scheme']})"
            pairs.append(_tensor_pair(f"templates_{p['scheme']}", name, p, grid))
    if args.whole_head:
        pairs.append(whole_head_pair(grid))
    if args.phantom:
        pairs.append(phantom_benchmark_pair())
    return pairs


def whole_head_pair(grid) -> dict:
    """fsaverage with skull and scalp -> the skull-stripped mni2009a template; labels: brain
    masks (aseg > 0, the template's brain mask), so Dice measures brain-outline alignment."""
    from deepsim.geometry import Image
    from deepsim.training.anatomy import load_anatomy, whole_head

    fixed, fixed_labels, _ = load_anatomy("mni2009a")
    moving_labels = load_anatomy("fsaverage")[1]
    return {
        "set": "whole_head",
        "id": "fsaverage T1 (whole head) -> mni2009a (skull-stripped), brain mask",
        "fixed": Image(fixed.astype(np.float32), grid),
        "moving": Image(whole_head(), grid),
        "fixed_labels": Image((fixed_labels > 0).astype(np.int16), grid),
        "moving_labels": Image((moving_labels > 0).astype(np.int16), grid),
        "gt_mm": None,
    }


def phantom_benchmark_pair(seed: int = 0) -> dict:
    """The non-brain pair: :func:`phantom_gate.phantom_pair` (random shapes, known smooth motion
    of peak 4 mm, oblique anisotropic grid with a non-zero origin)."""
    from phantom_gate import phantom_grid, phantom_pair

    grid = phantom_grid()
    name = f"random-shape phantom {seed} (oblique {grid.shape} grid)"
    return _tensor_pair("non_brain", name, phantom_pair(seed, grid), grid)


def translation_pair(shift_mm: np.ndarray) -> dict:
    """mni2009a as fixed and the same image shifted so that ``moving(x + t) = fixed(x)``; the
    correct answer is ``d(x) = t`` everywhere."""
    import SimpleITK as sitk

    from deepsim.geometry import Grid, Image, from_sitk, to_sitk
    from deepsim.training.anatomy import load_anatomy, reference_image

    image, labels, _ = load_anatomy("mni2009a")
    grid = Grid.from_sitk(reference_image())
    fixed = Image(image.astype(np.float32), grid)
    # moving(y) = fixed(y - t): resample fixed through y -> y - t
    shift = sitk.TranslationTransform(3, tuple(float(-s) for s in shift_mm))
    moving = from_sitk(sitk.Resample(to_sitk(fixed), grid.reference(), shift, sitk.sitkLinear, 0.0))
    lab = Image(labels.astype(np.int16), grid)
    moving_lab = from_sitk(
        sitk.Resample(to_sitk(lab), grid.reference(), shift, sitk.sitkNearestNeighbor, 0)
    )
    gt = np.broadcast_to(np.asarray(shift_mm, np.float32), (*grid.shape, 3)).copy()
    return {
        "set": "translation",
        "id": f"mni2009a shifted by {shift_mm.tolist()} mm (LPS)",
        "fixed": fixed,
        "moving": Image(moving.array.astype(np.float32), grid),
        "fixed_labels": lab,
        "moving_labels": moving_lab,
        "gt_mm": gt,
    }


def run_pair(pair: dict, methods: list[str], model, args, folder: Path) -> list[dict]:
    fixed_path = _write(pair["fixed"], folder / "fixed.nii.gz")
    moving_path = _write(pair["moving"], folder / "moving.nii.gz")
    coords = coordinate_images(pair["moving"].grid, folder)
    grid = pair["fixed"].grid
    mask = pair["fixed_labels"].array > 0
    rows = []
    base = {"set": pair["set"], "pair": pair["id"]}
    zero = np.zeros((*grid.shape, 3), np.float32)
    rows.append(
        {
            **base,
            "method": "identity",
            **evaluate(pair["fixed_labels"], pair["moving_labels"], zero, 0.0, pair["gt_mm"]),
        }
    )
    for method in methods:
        check = None
        try:
            if method in ANTS_PRESETS:
                mapped, tool_warped, runtime = run_ants(
                    fixed_path, moving_path, coords, args.seed, ANTS_PRESETS[method]
                )
                disp = field_from_coordinates(mapped, grid)
            elif method == "convexadam":
                disp, tool_warped, runtime = run_convexadam(pair["fixed"], pair["moving"])
            elif method in ("elastix", "elastix_brain"):
                mapped, tool_warped, runtime = run_elastix(
                    fixed_path, moving_path, coords, args.threads, method == "elastix_brain"
                )
                disp = field_from_coordinates(mapped, grid)
            elif method in DEEPSIM_IO:
                io = DEEPSIM_IO[method]
                disp, tool_warped, runtime = run_deepsim(model, pair["fixed"], pair["moving"], io)
            else:
                raise ValueError(f"unknown method {method!r}")
            check = field_check(pair["moving"], grid, disp, tool_warped, mask)
        except Exception as err:  # noqa: BLE001 - one tool failing must not lose the others
            log.exception("%s failed on %s", method, pair["id"])
            rows.append({**base, "method": method, "error": f"{type(err).__name__}: {err}"})
            continue
        ev = evaluate(pair["fixed_labels"], pair["moving_labels"], disp, runtime, pair["gt_mm"])
        if pair["gt_mm"] is not None and pair["set"] == "translation":
            ev["median_disp_mm"] = np.median(disp[mask], axis=0).round(3).tolist()
        rows.append({**base, "method": method, "field_check": check, **ev})
        log.info(
            "%-13s %-40s Dice %.4f fold %.4f%% EPE %s  %.1f s  (field check %.4f)",
            method,
            pair["id"],
            ev["mean_dice"],
            ev["folding_percent"],
            f"{ev['epe_mm']:.2f} mm" if "epe_mm" in ev else "-",
            runtime,
            check,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="semi-synthetic mni2009a pairs")
    parser.add_argument(
        "--template-pairs", type=int, default=2, help="pairs per template combination (max 2)"
    )
    parser.add_argument(
        "--methods",
        default="deepsim,deepsim_fast,deepsim_best,deepsim_net,deepsim_affine,ants_syn,"
        "ants_synquick_s,ants_syn_s,elastix_brain,elastix,convexadam",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-whole-head", dest="whole_head", action="store_false", help="skip the whole-head pair"
    )
    parser.add_argument(
        "--no-phantom", dest="phantom", action="store_false", help="skip the non-brain pair"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every method")
    parser.add_argument("--no-sanity", action="store_true", help="skip the translation check")
    parser.add_argument("--out", type=Path, default=RESULTS / "classical.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the records of the (method, pair set) combinations not run now from an "
        "existing --out file (e.g. rerun DeepSim on the phantom only, without ANTs and elastix)",
    )
    args = parser.parse_args(argv)
    # same thread count for all: ITK (ANTs, elastix) and torch
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("deepsim").setLevel(logging.WARNING)

    from deepsim.api import resolve_model
    from deepsim.modelio import load_model

    methods = [m for m in args.methods.split(",") if m]
    notes = []
    model_paths = {"brain": resolve_model("brain-3d", 3), "non_brain": resolve_model(NON_BRAIN, 3)}
    model_note = str(model_paths["brain"].relative_to(ROOT))
    if model_paths["non_brain"] != model_paths["brain"]:
        model_note += f" (the non-brain pair: {model_paths['non_brain'].relative_to(ROOT)})"
    loaded = {p: load_model(p, spatial_dims=3) for p in set(model_paths.values())}
    models = {k: loaded[p] for k, p in model_paths.items()}
    tools = [(t, "ants") for t in ANTS_PRESETS] + [("elastix", "itk"), ("elastix_brain", "itk")]
    tools += [("convexadam", "convexAdam")]
    for tool, module in tools:
        if tool in methods:
            try:
                __import__(module)
            except ImportError:
                notes.append(
                    f"{tool} not run: {module} is not installed (bash benchmarks/setup.sh)"
                )
                methods.remove(tool)
    t_start = time.perf_counter()
    records = []
    sanity = []
    with tempfile.TemporaryDirectory(prefix="deepsim-classical-") as tmp:
        folder = Path(tmp)
        if not args.no_sanity:
            shift = np.array([6.0, -4.0, 2.0])
            sanity = run_pair(translation_pair(shift), methods, models["brain"], args, folder)
        for pair in load_pairs(args):
            model = models["non_brain" if pair["set"] == "non_brain" else "brain"]
            records.extend(run_pair(pair, methods, model, args, folder))

    # each record names the machine and run it was measured in, so merged files never compare
    # times across machines (render_classical.py shows "time x" only on one kind of CPU)
    here = environment()
    label = machine_label(here)
    for r in records + sanity:
        r["machine"] = label
    previous = read_json(args.out) if args.merge else None
    if previous:
        earlier = previous.get("merged_from") or {}
        for r in previous["records"] + previous.get("sanity_translation", []):
            if "machine" not in r:  # files from before records named their machine
                older = r["method"] in earlier.get("methods", []) and earlier.get("environment")
                r["machine"] = machine_label(older or previous["environment"])
        rerun = {(r["method"], r["set"]) for r in records + sanity}
        rerun_sets = {s for _, s in rerun}
        keep = [
            r
            for r in previous["records"] + previous.get("sanity_translation", [])
            if (r["method"], r["set"]) not in rerun and r["method"] != "identity"
        ]
        keep += [
            r
            for r in previous["records"]
            if r["method"] == "identity" and r["set"] not in rerun_sets
        ]
        records += [r for r in keep if r["set"] != "translation"]
        sanity += [r for r in keep if r["set"] == "translation"]
        notes += [
            n
            for n in previous.get("notes", [])
            if not any(m.split("_")[0] in n.lower() for m in methods)
        ]
        methods += sorted({r["method"] for r in keep} - set(methods))
    for r in records:  # files written before the templates were split by label scheme
        if r["set"] == "templates":
            r["set"] = "templates_" + r["pair"].rsplit("(", 1)[1].rstrip(")")
    order = [*DEEPSIM_IO, *ANTS_PRESETS, "elastix_brain", "elastix", "convexadam"]
    methods = sorted(methods, key=lambda m: order.index(m) if m in order else len(order))
    all_methods = ["identity"] + methods
    sets = sorted({r["set"] for r in records}, key=lambda s: (s != "semi_synthetic", s))
    summary = {}
    for m in all_methods:
        summary[m] = {}
        for s in sets + ["all"]:
            rows = [
                r
                for r in records
                if r["method"] == m and "error" not in r and (s == "all" or r["set"] == s)
            ]
            if not rows:
                continue
            entry = {
                "dice": summary_stats([r["mean_dice"] for r in rows]),
                "folding_percent": float(np.mean([r["folding_percent"] for r in rows])),
                "std_log_jacobian": float(np.mean([r["std_log_jacobian"] for r in rows])),
                "runtime_s": summary_stats([r["runtime_s"] for r in rows]),
            }
            epe = [r["epe_mm"] for r in rows if "epe_mm" in r]
            if epe:
                entry["epe_mm"] = float(np.mean(epe))
            summary[m][s] = entry
    result = {
        "benchmark": "classical",
        "settings": {
            "semi_synthetic_pairs": args.pairs,
            "seed": args.seed,
            "threads": args.threads,
            "grid": "common 2 mm grid, 96 x 112 x 96",
            "model": model_note,
            "ants": {
                m: f"ants.registration(type_of_transform={t!r})" for m, t in ANTS_PRESETS.items()
            },
            "ants_note": "ants_syn is the antspyx default 'SyN' (Mattes MI, reg_iterations "
            "(40, 20, 0): no full-resolution level), kept and labelled as such",
            "convexadam": "convexadam (PyPI) convex_adam_pt with its defaults (MIND r=1 d=2, "
            "grid 6, hw 4, Adam 80 iterations, lambda 1.25, inverse consistency), CPU float32, "
            "no affine",
            "elastix": "itk-elastix default 'affine' + 'bspline' parameter maps, the B-spline map "
            "without its bending-energy penalty term (that term segfaults in itk-elastix 0.25.4 "
            "on this machine)",
            "elastix_brain": "itk-elastix default 'affine' map, then "
            "benchmarks/elastix/brain_bspline.txt (the elastix model zoo's Par0035 brain "
            "B-spline settings: MI, 3 resolutions, 5 mm final control-point spacing, ASGD 500 "
            "iterations x 5000 random samples per resolution)",
            "non_brain": f"the {NON_BRAIN} model with the same presets",
            "deepsim": "register() as 'deepsim register' runs it: robust affine + network + the "
            "multi-resolution engine with the 'recommended' preset; deepsim_fast / deepsim_best: "
            "the other presets; deepsim_net: network only; heatmaps off",
            "runtime": "registration call only (no file reading); ours includes affine "
            "pre-alignment, resampling, network, field and warped image",
            "folding": "% voxels with det J <= 0 over the whole fixed grid, signed central "
            "differences in mm",
            "epe": "mean |d - d_true| in mm over the fixed foreground",
        },
        "notes": notes,
        "sanity_translation": sanity,
        "summary": summary,
        "records": records,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "environment": here,
    }
    if previous:
        result["notes"] = list(dict.fromkeys(notes))
        result["merged_from"] = {
            "methods": sorted({r["method"] for r in keep}),
            "environment": previous.get("merged_from", {}).get("environment")
            or previous["environment"],
            "wall_s": previous.get("wall_s"),
        }
    write_json(args.out, result)
    log.info("wrote %s", args.out)
    for m in all_methods:
        s = summary[m].get("all")
        if s:
            print(
                f"{m:>13}: Dice {s['dice']['mean']:.4f}  folding {s['folding_percent']:.3f} %  "
                f"std log|J| {s['std_log_jacobian']:.3f}  time {s['runtime_s']['mean']:.1f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
