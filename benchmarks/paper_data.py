"""The data of the paper comparison: fsaverage-seeded training pairs (2D slices or 3D volumes),
the held-out test pairs (semi-synthetic mni2009a, real fsaverage <-> mni2009a), test-time noise,
and the scoring of one field on the common 2 mm grid."""

from __future__ import annotations

import numpy as np
import torch

N_CLASSES = 4  # background + the tissue scheme's grey matter, white matter, CSF
TRAIN_SLICES = list(range(30, 68, 2))  # axial fsaverage slices that seed 2D training pairs
TEST_SLICES = [36, 42, 48, 54, 60]  # axial positions of the held-out 2D test pairs


class SliceSeededPairs:
    """Training/validation source of :func:`deepsim.training.train.train` for 2D: synthetic pairs seeded by
    axial fsaverage slices (tissue labels and image), with the source interface of
    :mod:`deepsim.training.datasets` (``sample(generator, device)``, ``pair(index, device)``).

    The library's ``synthetic`` data kind seeds only with whole 3D anatomies, so the 2D comparison
    registers this source as the data kind ``fsaverage-slices``."""

    def __init__(self, data: dict, split: str, seed: int):
        from deepsim.training.anatomy import anatomy_grid, load_anatomy, tissue_labels
        from deepsim.training.synth import SynthConfig, SyntheticPairs

        image, labels, _ = load_anatomy("fsaverage")
        labels = tissue_labels("fsaverage", "tissue", labels)
        seeds = [
            (
                torch.from_numpy(np.ascontiguousarray(labels[k], np.int64)),
                torch.from_numpy(np.ascontiguousarray(image[k], np.float32)),
            )
            for k in data["slices"]
        ]
        shape = tuple(image.shape[1:])
        self.grid = anatomy_grid(2)
        config = SynthConfig.from_dict(data.get("synth", {}))
        offset = 0 if split == "train" else 10_000_019
        self.pairs = SyntheticPairs(shape, config, seed + offset, seeds=seeds)

    def sample(self, generator, device="cpu") -> dict:
        return _keep(self.pairs.sample(generator), device)

    def pair(self, index, device="cpu") -> dict:
        return _keep(self.pairs.pair(index), device)


def _keep(item: dict, device) -> dict:
    keys = ("fixed", "moving", "fixed_labels", "moving_labels")
    return {k: item[k].to(device) for k in keys}


def data_config(dims: int) -> dict:
    # as configs/brain-3d.json, all pairs fsaverage-seeded (so every pair has tissue labels)
    synth = {"seed_prob": 1.0, "real_image_prob": 0.7, "max_disp": 4.0, "seed_max_disp": 4.0}
    if dims == 2:
        return {"kind": "fsaverage-slices", "slices": TRAIN_SLICES, "synth": synth}
    return {
        "kind": "synthetic",
        "shape": [96, 112, 96],
        "crop": [64, 64, 64],
        "anatomies": ["fsaverage"],
        "label_scheme": "tissue",
        "synth": synth,
    }


def test_pairs(args) -> list[dict]:
    """Held-out test pairs: semi-synthetic mni2009a and real fsaverage <-> mni2009a pairs."""
    from deepsim.training.benchdata import semi_synthetic_pairs, template_pairs

    pairs = []
    positions = TEST_SLICES if args.dims == 2 else [None]
    for position in positions:
        seed = args.test_seed + (position or 0)
        kwargs = {"slice_index": position} if args.dims == 2 else {}
        for p in semi_synthetic_pairs(
            "mni2009a", args.test_pairs, seed, spatial_dims=args.dims, scheme="tissue", **kwargs
        ):
            pairs.append(
                {
                    "set": "semi_synthetic",
                    "id": f"mni2009a-s{position}-{p['index']}",
                    **_keep(p, "cpu"),
                    "disp": p["disp"],
                }
            )
        for p in template_pairs(["fsaverage", "mni2009a"], spatial_dims=args.dims, **kwargs):
            pairs.append(
                {
                    "set": "templates",
                    "id": f"{p['moving_name']}->{p['fixed_name']}-s{position}",
                    **_keep(p, "cpu"),
                }
            )
    return pairs


def evaluate_field(pair: dict, disp: torch.Tensor, region=None) -> dict:
    """Dice per tissue class, mean foreground Dice, folding %, std log|J|, diffusion regulariser
    and (with a known ``pair["disp"]``) the endpoint error in mm, for one predicted ``disp``
    ``(1, D, *spatial)`` in voxels of the common 2 mm grid, scored by
    :func:`deepsim.scoring.score_on_fixed_grid_mm`. ``region``: optional tuple of slices (spatial
    axes) to which every measure is restricted."""
    from deepsim.geometry import Image
    from deepsim.regularizers import diffusion
    from deepsim.scoring import score_on_fixed_grid_mm
    from deepsim.training.anatomy import anatomy_grid

    grid = anatomy_grid(disp.ndim - 2)

    def mm(field: torch.Tensor) -> np.ndarray:  # (1, D, *spatial) voxels -> (*spatial, D) mm
        return np.tensordot(field[0].double().numpy(), grid.linear, axes=(0, 1))

    mask = None
    reg_disp = disp
    if region is not None:
        mask = np.zeros(grid.shape, bool)
        mask[region] = True
        reg_disp = disp[(slice(None), slice(None), *region)]
    score = score_on_fixed_grid_mm(
        Image(pair["fixed_labels"][0, 0].numpy(), grid),
        Image(pair["moving_labels"][0, 0].numpy(), grid),
        mm(disp),
        mm(pair["disp"]) if "disp" in pair else None,
        mask,
        labels=range(1, N_CLASSES),
    )
    out = {
        "dice": score.dice_per_label,
        "mean_dice": score.mean_dice,
        "folding_percent": score.folding_percent_fixed_grid,
        "std_log_jacobian": score.std_log_jacobian_fixed_grid,
        "regulariser": float(diffusion(reg_disp)),
    }
    if score.endpoint_error_mm is not None:
        out["epe_mm"] = score.endpoint_error_mm
    return out


def noise_region(shape) -> tuple[slice, ...]:
    """The central box (half of every axis) where test-time noise is added."""
    return tuple(slice(n // 4, n - n // 4) for n in shape)


def add_noise(image: torch.Tensor, sigma: float, region, generator) -> torch.Tensor:
    out = image.clone()
    if sigma > 0:
        box = (slice(None), slice(None), *region)
        noise = torch.randn(out[box].shape, generator=generator) * sigma
        out[box] = (out[box] + noise).clamp(0.0, 1.0)
    return out
