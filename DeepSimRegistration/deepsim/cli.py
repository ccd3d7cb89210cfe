"""The ``deepsim`` command: register, train, evaluate, models.

Heavy imports (torch, SimpleITK) happen after argument parsing, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

__all__ = ["main", "build_parser", "PROGRESS_PREFIX"]

log = logging.getLogger("deepsim")

REGISTER_HELP = """\
Register MOVING to FIXED with a DeepSim registration network and write into DIR:
  warped.nii.gz                 moving image resampled onto the fixed grid (linear)
  displacement.nii.gz           ITK displacement-field transform on the fixed grid
  similarity_deepsim_{before,after}.nii.gz, similarity_ncc_{before,after}.nii.gz
                                similarity heatmaps on the fixed grid (higher = more similar)
  jacobian.nii.gz               Jacobian determinant of the mapping (<= 0: folding)
  warped_labels.nii.gz          moving labels warped (nearest neighbour), with --moving-labels
  summary.json                  runtime, device, model, folding %, similarities, Dice
  overview.png                  fixed / moving / warped / grid / heatmaps (needs matplotlib)

IMAGES: any 2D or 3D scalar format SimpleITK reads (NIfTI, NRRD, MHA, ...), any size, spacing
and orientation; both are handled in physical space. DIR must be new, empty or hold only an
earlier run's outputs; it is replaced whole when the registration succeeded, else left as it was.

TRANSFORM: displacement.nii.gz uses the resampling convention in LPS physical space: for a fixed
point x (mm), x + d(x) is the corresponding moving point. It is the complete mapping (affine
included). Load it with
  sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(p), sitk.sitkVectorFloat64))
or in 3D Slicer as a transform.

EXAMPLES:
  deepsim register fixed.nii.gz moving.nii.gz --out result
  deepsim register f.nii.gz m.nii.gz --out r --fixed-labels fl.nii.gz --moving-labels ml.nii.gz
  deepsim register f.png m.png --out r --model general-2d --io-steps 50 --device cuda
"""


class _SimilarityChoices:
    """``--similarity`` choices: the names (what menus list) and any weighted sum of them."""

    def __iter__(self):
        from .presets import SIMILARITIES

        return iter(SIMILARITIES)

    def __contains__(self, text) -> bool:
        from .presets import parse_similarity

        try:
            parse_similarity(str(text))
        except ValueError:
            return False
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepsim",
        description="Learned image registration with the DeepSim semantic similarity (2D and 3D).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    sub = parser.add_subparsers(dest="command", required=True)

    reg = sub.add_parser(
        "register",
        help="register a moving image to a fixed image",
        description=REGISTER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reg.add_argument("fixed", type=Path, help="fixed (reference) image")
    reg.add_argument("moving", type=Path, help="moving image, to be warped onto the fixed one")
    reg.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    reg.add_argument(
        "--model",
        metavar="NAME|PATH",
        help="shipped model name (see 'deepsim models') or a model file; default: the shipped "
        "default model for the images' dimension",
    )
    reg.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: auto"
    )
    reg.add_argument("--fixed-labels", type=Path, metavar="F", help="label map of the fixed image")
    reg.add_argument(
        "--moving-labels", type=Path, metavar="M", help="label map of the moving image"
    )
    reg.add_argument("--no-affine", action="store_true", help="skip the affine pre-alignment")
    reg.add_argument(
        "--io-steps",
        type=int,
        default=None,
        metavar="N",
        help="instance optimisation: N Adam steps on the model grid instead of the preset's "
        "levels (default: the preset; 0 = network only)",
    )
    reg.add_argument(
        "--preset",
        choices=["fast", "recommended", "best"],
        default="recommended",
        help="quality preset of the multi-resolution instance optimisation (default recommended)",
    )
    reg.add_argument(
        "--similarity",
        metavar="S",
        choices=_SimilarityChoices(),
        help="similarity of the instance optimisation, overriding the model's default: "
        "mind, ncc, deepsim or a weighted sum such as 'ncc+3*mind'",
    )
    reg.add_argument(
        "--keep-engine",
        action="store_true",
        help="always keep the instance optimisation's field, even where the model's DeepSim "
        "similarity rates the network's field alone higher (by default the 3D models keep the "
        "higher one)",
    )
    reg.add_argument("--fixed-mask", type=Path, metavar="F", help="mask of the fixed image")
    reg.add_argument("--moving-mask", type=Path, metavar="F", help="mask of the moving image")
    reg.add_argument("--rigid", action="store_true", help="rigid instead of affine pre-alignment")
    reg.add_argument(
        "--model-spacing",
        type=float,
        metavar="MM",
        help="run the network on a grid of this spacing instead of the model's (coarser: faster)",
    )
    reg.add_argument("--no-figure", action="store_true", help="do not write overview.png")
    reg.add_argument(
        "--progress-lines",
        action="store_true",
        help="report progress as lines 'deepsim-progress FRACTION MESSAGE' on stdout instead of a "
        "bar (for programs that run deepsim, such as the Slicer module)",
    )

    tr = sub.add_parser(
        "train",
        help="train a feature extractor or a registration model from a JSON config",
        description="Train from a JSON config (see configs/ for examples). Checkpoints with their "
        "config go to the config's output folder; rerunning the same command resumes. Launch with "
        "torchrun --nproc_per_node N for DistributedDataParallel (NCCL on GPUs, gloo on CPU).",
    )
    tr.add_argument("config", type=Path, help="training config (JSON)")
    tr.add_argument("--out", type=Path, help="output folder (overrides the config's)")
    tr.add_argument("--steps", type=int, help="override the number of optimiser steps")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    tr.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if a checkpoint exists"
    )

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a registration model on a data set (Dice, folding, smoothness)",
        description="Register every pair of a data set (a JSON data config, as in training configs) "
        "and print mean foreground Dice before/after, folding %% and std log|J| as JSON.",
    )
    ev.add_argument("data", type=Path, help="data config (JSON) with a 'data' entry")
    ev.add_argument("--model", metavar="NAME|PATH", required=True)
    ev.add_argument("--pairs", type=int, default=8, help="number of pairs (default 8)")
    ev.add_argument("--split", default="test", help="data split (default test)")
    ev.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ev.add_argument(
        "--io-steps", type=int, default=None, help="default: the model's recommendation"
    )

    wp = sub.add_parser(
        "warp",
        help="apply a displacement.nii.gz to another image (e.g. labels) onto the fixed grid",
        description="Resample IMAGE (in the moving image's space) through a displacement field "
        "written by 'deepsim register' onto that field's grid (the fixed image's grid).",
    )
    wp.add_argument("image", type=Path, help="image or label map in the moving image's space")
    wp.add_argument("--transform", type=Path, required=True, help="displacement.nii.gz")
    wp.add_argument("--out", type=Path, required=True, help="output image file")
    wp.add_argument("--nearest", action="store_true", help="nearest neighbour (for label maps)")

    sub.add_parser("models", help="list the shipped models")
    return parser


PROGRESS_PREFIX = "deepsim-progress"


def _progress_line(fraction: float, message: str) -> None:
    """One ``deepsim-progress FRACTION MESSAGE`` line on stdout (``--progress-lines``)."""
    print(f"{PROGRESS_PREFIX} {fraction:.4f} {message}", flush=True)


def cmd_register(args) -> int:
    from .api import RegistrationOptions, resolve_model
    from .geometry import read_image
    from .inputs import check_model_spacing
    from .modelio import load_model
    from .outputs import OutputFolder, write_outputs
    from .progress import ProgressBar
    from .register import register

    if args.io_steps is not None and args.io_steps < 0:
        raise ValueError(f"--io-steps must be >= 0, got {args.io_steps}")
    if args.model_spacing is not None:
        check_model_spacing(args.model_spacing, "--model-spacing")
    if (args.fixed_labels is None) != (args.moving_labels is None):
        raise ValueError("give both --fixed-labels and --moving-labels, or neither")
    with OutputFolder(args.out) as folder:  # checked and locked before any work
        fixed = read_image(args.fixed, "fixed image")
        moving = read_image(args.moving, "moving image")
        if fixed.grid.spatial_dims != moving.grid.spatial_dims:
            raise ValueError(
                f"fixed image is {fixed.grid.spatial_dims}D but moving image is "
                f"{moving.grid.spatial_dims}D"
            )
        labels = {}
        if args.fixed_labels is not None:
            labels["fixed_labels"] = read_image(args.fixed_labels, "fixed labels")
            labels["moving_labels"] = read_image(args.moving_labels, "moving labels")
        for what in ("fixed_mask", "moving_mask"):
            if getattr(args, what) is not None:
                labels[what] = read_image(getattr(args, what), what.replace("_", " "))
        path = resolve_model(args.model, fixed.grid.spatial_dims)
        model = load_model(path, spatial_dims=fixed.grid.spatial_dims)
        opts = RegistrationOptions(
            device=args.device,
            affine=not args.no_affine,
            rigid=args.rigid,
            preset=args.preset,
            similarity=args.similarity,
            io_steps=args.io_steps,
            model_spacing=args.model_spacing,
            deepsim_judge=False if args.keep_engine else None,
        )
        bar = None if args.progress_lines else ProgressBar(100)
        try:
            result = register(
                fixed,
                moving,
                model,
                opts,
                progress=_progress_line
                if bar is None
                else lambda fraction, message: bar.show(round(100 * fraction), message),
                **labels,
            )
        finally:
            if bar is not None:
                bar.close()
        written = write_outputs(
            result, folder, moving=moving, fixed=fixed, figure=not args.no_figure
        )
    s = result.summary
    line = (
        f"registered in {s.runtime_s:.2f} s on {s.device} with {s.model}: "
        f"folding {s.folding_percent:.3f} %"
    )
    if s.similarity_deepsim_before is not None:
        line += f", DeepSim {s.similarity_deepsim_before:.3f} -> {s.similarity_deepsim_after:.3f}"
    if s.similarity_ncc_before is not None:
        line += f", NCC {s.similarity_ncc_before:.3f} -> {s.similarity_ncc_after:.3f}"
    if s.dice_after is not None:
        line += f", Dice {s.dice_before:.3f} -> {s.dice_after:.3f}"
    if s.engine_kept is not None:
        line += f", kept the {s.engine_kept} field"
    print(line)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_warp(args) -> int:
    import numpy as np

    from .geometry import read_image, read_vector_image, write_image
    from .inputs import check_displacement
    from .outputs import write_file_atomic
    from .register import warp_image

    if args.out.is_dir():
        raise IsADirectoryError(f"--out {args.out} is a folder; give an output image file name")
    if not args.out.parent.is_dir():
        raise FileNotFoundError(f"output folder {args.out.parent} does not exist")
    field = read_vector_image(args.transform, f"transform {args.transform}")
    image = read_image(args.image)
    if image.grid.spatial_dims != field.grid.spatial_dims:
        raise ValueError(
            f"image is {image.grid.spatial_dims}D but the transform is {field.grid.spatial_dims}D"
        )
    check_displacement(field, image.grid, f"transform {args.transform}")
    out = warp_image(
        image, field.grid, field.array.astype(np.float64), "nearest" if args.nearest else "linear"
    )
    write_file_atomic(lambda tmp: write_image(out, tmp), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_models(args) -> int:
    from .api import catalogue, models_dir

    skipped = []
    models = catalogue(skipped=skipped)
    for reason in skipped:
        print(f"deepsim models: skipped: {reason}", file=sys.stderr)
    if not models:
        print(f"no shipped models in {models_dir()}")
        return 1
    from .presets import DEFAULT_PRESET, engine_settings

    for name, m in models.items():
        flag = " (default)" if m.default else ""
        sim = "+".join(f"{w:g}*{n}" for n, w in engine_settings(DEFAULT_PRESET, name).similarity)
        print(f"{name:<16} {m.spatial_dims}D{flag}, refined by {sim}  {m.description}")
    return 0


def _training():
    """deepsim.training, or a clear error where it is not installed (the Slicer extension)."""
    try:
        from . import training
    except ImportError as err:
        raise RuntimeError(
            "training is not part of this installation; pip install 'deepsim-registration[train]'"
        ) from err
    return training


def cmd_train(args) -> int:
    _training()
    from .training.train import train_from_config

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: nothing would be trained; give at least 1 step")
    outcome = train_from_config(
        args.config, out=args.out, steps=args.steps, device=args.device, resume=not args.no_resume
    )
    if outcome.step == outcome.start_step:
        print(
            f"nothing was trained: the checkpoint is already at step {outcome.step}, the configured "
            "number of steps; raise --steps to train further"
        )
    else:
        print(f"trained steps {outcome.start_step + 1}..{outcome.step}")
    return 0


def cmd_evaluate(args) -> int:
    _training()
    from .config_checks import SPLITS
    from .training.evaluate import evaluate_model

    if args.split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}; got {args.split!r}")
    if args.pairs < 1:
        raise ValueError(f"--pairs must be at least 1, got {args.pairs}")
    if args.io_steps is not None and args.io_steps < 0:
        raise ValueError(f"--io-steps must be >= 0, got {args.io_steps}")

    report = evaluate_model(
        args.data,
        args.model,
        pairs=args.pairs,
        split=args.split,
        device=args.device,
        io_steps=args.io_steps,
    )
    print(json.dumps(report, indent=2))
    return 0


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C: temporary files are removed, nothing is half-written."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    commands = {
        "register": cmd_register,
        "warp": cmd_warp,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "models": cmd_models,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("deepsim: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, MemoryError) as err:
        if args.verbose:
            raise
        print(f"deepsim {args.command}: error: {err}", file=sys.stderr)
        return 2
