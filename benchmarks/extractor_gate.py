"""The gate every DeepSim feature extractor must pass before it ships.

DeepSim is only useful if its features react to misalignment more than to the intensity changes
two images of one anatomy show. For each shipped model with an extractor and for each feature
level, on a held-out image x (no training saw it):

* ``shift``: mean loss ``1 - mean cos(f(x), f(roll(x, ±2 voxels)))`` over the 2D directions;
* ``intensity``: mean loss ``1 - mean cos(f(x), f(aug(x)))`` over random draws of the benchmark's
  intensity model (bias, contrast, gamma, noise of
  :data:`deepsim.training.benchdata.BENCH_CONFIG`, the changes test pairs get);
* ``ratio`` = shift / intensity; the same ratio for NCC (``1 - local squared NCC``, window 9) is
  the bar: a level passes when its ratio is at least NCC's.

Images: 3D, the MNI ICBM 2009a template on the common 2 mm grid and a random-shape phantom
(:func:`phantom_gate.phantom_pair`, the general-purpose gate's seed 0); 2D, the template's axial
slice and a microscopy-like specimen (:func:`deepsim.training.synth.microscopy_pair`, held-out seed).
DeepSim_seg extractors also report their segmentation Dice on images no training saw: brain
extractors of tissue classes GM/WM/CSF on mni2009a (and on their training subject fsaverage),
boundary-band extractors the bands (:func:`deepsim.training.synth.boundary_bands`) of the phantom
and of mni2009a's tissue map.

Usage::

    python benchmarks/extractor_gate.py [--models brain-3d general-2d] [--draws 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, md_table, write_json  # noqa: E402

SHIFT = 2


def held_out_images(spatial_dims: int) -> dict[str, torch.Tensor]:
    """Name -> ``(1, 1, *spatial)`` image in [0, 1] that no shipped model was trained on."""
    from deepsim.training.anatomy import load_anatomy
    from deepsim.training.benchdata import _volume_or_slice
    from deepsim.training.synth import SynthConfig, microscopy_pair, random_deformation

    image, _, _ = load_anatomy("mni2009a")
    image = _volume_or_slice(image.astype(np.float32), spatial_dims, 0, None)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    out = {"mni2009a": torch.from_numpy(image)[None, None]}
    if spatial_dims == 3:
        from phantom_gate import phantom_grid, phantom_pair

        out["phantom"] = phantom_pair(0, phantom_grid())["moving"]
    if spatial_dims == 2:
        g = torch.Generator().manual_seed(987_654)
        shape = (128, 128)
        pair = microscopy_pair(shape, g, SynthConfig(), random_deformation(shape, 0.0, g))
        out["microscopy"] = pair["moving"]
    return out


def intensity_draws(image: torch.Tensor, n: int, seed: int) -> list[torch.Tensor]:
    """``n`` copies of ``image`` under the benchmark's intensity model."""
    from deepsim.training.benchdata import BENCH_CONFIG as c
    from deepsim.training.synth import augment_intensity

    g = torch.Generator().manual_seed(seed)
    return [
        augment_intensity(
            image,
            g,
            c.bias_strength,
            c.bias_smoothness,
            c.gamma_std,
            c.noise_range,
            c.contrast_range,
        )
        for _ in range(n)
    ]


def shifts(image: torch.Tensor) -> list[torch.Tensor]:
    """``image`` rolled by ±SHIFT voxels along each axis."""
    axes = range(2, image.ndim)
    return [torch.roll(image, s, dims=a) for a in axes for s in (SHIFT, -SHIFT)]


def pad_to(image: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    pads = []
    for n in reversed(image.shape[2:]):
        pads += [0, (-n) % multiple]
    return torch.nn.functional.pad(image, pads)


@torch.no_grad()
def level_losses(extractor, x: torch.Tensor, others: list[torch.Tensor]) -> np.ndarray:
    """``(len(others), levels)`` DeepSim losses per level against ``x``."""
    from deepsim.similarity import cosine_maps

    ref = extractor.features(x)
    rows = []
    for y in others:
        rows.append([1.0 - float(m.mean()) for m in cosine_maps(ref, extractor.features(y))])
    return np.asarray(rows)


def ncc_losses(x: torch.Tensor, others: list[torch.Tensor]) -> np.ndarray:
    from deepsim.similarity import ncc_loss

    return np.asarray([float(ncc_loss(x, y)) for y in others])


def extractor_target(model) -> str | None:
    """``loss.target`` the extractor of ``model`` was trained with: from its own config for an
    extractor file, from ``info.extractor_training`` for a registration model."""
    if "registration" in model.networks:
        loss = model.config.get("info", {}).get("extractor_training", {}).get("loss", {})
    else:
        loss = model.config.get("loss", {})
    return loss.get("target")


@torch.no_grad()
def _dice(model, image: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice of classes 1-3 of the extractor's segmentation of ``image`` against ``truth``."""
    from deepsim.metrics import mean_foreground_dice

    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    pred = model.extractor(pad_to(x)).argmax(1)[0].numpy()
    return mean_foreground_dice(truth, pred[tuple(slice(0, n) for n in image.shape)], [1, 2, 3])


def segmentation_dice(model) -> dict[str, float]:
    """Held-out segmentation Dice of a DeepSim_seg extractor, by what it was trained to segment:

    * boundary bands: the bands of the phantom (seed 0) and of mni2009a's GM/WM/CSF map, which
      no training saw (a brain extractor also marks the boundaries between structures of one
      tissue class, which the tissue map lacks, so its mni2009a Dice is a lower bound);
    * brain tissue classes: mean GM/WM/CSF Dice on mni2009a (held out) and on fsaverage (training).
    """
    from deepsim.training.anatomy import load_anatomy, tissue_labels
    from deepsim.training.benchdata import _volume_or_slice
    from deepsim.training.synth import boundary_bands

    if extractor_target(model) == "boundaries":
        if model.spatial_dims != 3:
            return {}
        from phantom_gate import phantom_grid, phantom_pair

        pair = phantom_pair(0, phantom_grid())
        bands = boundary_bands(pair["moving_labels"])[0, 0].numpy()
        out = {"heldout_phantom_bands": _dice(model, pair["moving"][0, 0].numpy(), bands)}
        image, labels, _ = load_anatomy("mni2009a")
        tissue = torch.from_numpy(tissue_labels("mni2009a", "tissue", labels))[None, None]
        bands = boundary_bands(tissue)[0, 0].numpy()
        out["heldout_mni2009a_tissue_bands"] = _dice(model, image, bands)
        return out
    out = {}
    for name, key in (("mni2009a", "heldout_mni2009a"), ("fsaverage", "training_fsaverage")):
        image, labels, _ = load_anatomy(name)
        truth = tissue_labels(name, "tissue", labels)
        image = _volume_or_slice(image.astype(np.float32), model.spatial_dims, 0, None)
        truth = _volume_or_slice(truth, model.spatial_dims, 0, None)
        out[key] = _dice(model, image, truth)
    return out


def load(name: str):
    """A shipped model by name, or any model file (an extractor's own file too) by path."""
    from deepsim.api import catalogue
    from deepsim.modelio import load_model

    models = catalogue()
    return load_model(models[name].path if name in models else Path(name))


def gate_model(name: str, model, draws: int) -> list[dict]:
    extractor = model.extractor
    if extractor is None:
        return []
    used = model.loss.levels
    kind = model.config["networks"]["extractor"]["kind"]
    rows = []
    for image_name, image in held_out_images(model.spatial_dims).items():
        x = pad_to(image)
        moved = [pad_to(s) for s in shifts(image)]
        changed = [pad_to(a) for a in intensity_draws(image, draws, seed=11)]
        ncc_ratio = ncc_losses(x, moved).mean() / ncc_losses(x, changed).mean()
        shift_l = level_losses(extractor, x, moved).mean(0)
        inten_l = level_losses(extractor, x, changed).mean(0)
        for level, (s, i) in enumerate(zip(shift_l, inten_l)):
            ratio = float(s / max(i, 1e-12))
            rows.append(
                {
                    "model": name,
                    "extractor": kind,
                    "image": image_name,
                    "level": level,
                    "used": used is None or level in used,
                    "shift_loss": float(s),
                    "intensity_loss": float(i),
                    "ratio": ratio,
                    "ncc_ratio": float(ncc_ratio),
                    "passes": ratio >= ncc_ratio,
                }
            )
    return rows


def main(argv=None) -> int:
    from deepsim.api import catalogue

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", help="shipped model names or model files (default: all)")
    p.add_argument("--draws", type=int, default=6, help="intensity draws per image")
    p.add_argument("--out", type=Path, default=RESULTS / "extractor_gate.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    names = args.models or sorted(catalogue())
    rows, dice = [], []
    for name in names:
        model = load(name)
        rows += gate_model(name, model, args.draws)
        if model.extractor is not None and model.config["networks"]["extractor"]["kind"] == (
            "segmentation"
        ):
            dice += [
                {"model": name, "set": k, "dice": v} for k, v in segmentation_dice(model).items()
            ]
    header = ["model", "extractor", "image", "level", "used", "shift", "intensity", "ratio"]
    header += ["NCC ratio", "passes"]
    table = [
        [r["model"], r["extractor"], r["image"], r["level"], "yes" if r["used"] else "no"]
        + [f"{r['shift_loss']:.4f}", f"{r['intensity_loss']:.4f}", f"{r['ratio']:.2f}"]
        + [f"{r['ncc_ratio']:.2f}", "PASS" if r["passes"] else "fail"]
        for r in rows
    ]
    print(md_table(header, table))
    if dice:
        print()
        print(
            md_table(
                ["model", "segmentation Dice on", "Dice"],
                [[d["model"], d["set"], f"{d['dice']:.3f}"] for d in dice],
            )
        )
    used_rows = [r for r in rows if r["used"]]
    verdict = {
        name: all(r["passes"] for r in used_rows if r["model"] == name)
        for name in {r["model"] for r in rows}
    }
    print("\nused levels pass:", verdict)
    write_json(
        args.out,
        {
            "environment": environment(),
            "shift_voxels": SHIFT,
            "draws": args.draws,
            "levels": rows,
            "segmentation_dice": dice,
            "passes": verdict,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
