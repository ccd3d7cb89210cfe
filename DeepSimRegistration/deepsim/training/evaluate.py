"""Evaluation of a registration model on a data set, through the same path users run.

Every pair goes through :func:`deepsim.register.register` (affine, model grid, network, mapping
to the fixed grid), so the numbers describe what ``deepsim register`` does. Reported per pair and
as means: mean foreground Dice at identity, after the affine and after registration, and the
scores of :func:`deepsim.scoring.score_on_fixed_grid_mm` (folding %, std log|J| on the fixed grid;
the endpoint error in mm over the fixed foreground where the data know the true displacement).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config_checks import check_data_config, read_json_config
from ..geometry import Grid, Image
from ..metrics import mean_foreground_dice
from ..scoring import score_on_fixed_grid_mm

__all__ = ["evaluate_model", "evaluate_pairs", "pair_images"]

log = logging.getLogger(__name__)


def pair_images(p: dict, grid: Grid) -> tuple[Image, Image, Image, Image, np.ndarray | None]:
    """A pair dict (``fixed, moving, fixed_labels, moving_labels`` ``(1, 1, *spatial)`` tensors
    or arrays on ``grid``, optional ``disp`` in fixed voxels) as images, and its known
    displacement as ``(*spatial, D)`` LPS mm (None without ``disp``)."""

    def array(key):
        v = p[key]
        return np.asarray(v.cpu() if hasattr(v, "cpu") else v)[0]

    fixed, moving = (Image(array(k)[0].astype(np.float32), grid) for k in ("fixed", "moving"))
    fl, ml = (Image(array(k)[0].astype(np.int16), grid) for k in ("fixed_labels", "moving_labels"))
    true_mm = np.moveaxis(array("disp"), 0, -1) @ grid.linear.T if "disp" in p else None
    return fixed, moving, fl, ml, true_mm


def evaluate_pairs(
    pairs, model, grid: Grid, device="cpu", io_steps=None, affine=True, preset=None
) -> dict:
    """Register each pair dict (``fixed, moving, fixed_labels, moving_labels`` tensors or arrays,
    optional ``disp`` in fixed voxels) and summarise; ``preset``: the engine's (None = default)."""
    from ..api import RegistrationOptions
    from ..register import register

    rows = []
    opts = RegistrationOptions(device=device, affine=affine, io_steps=io_steps, heatmaps=False)
    if preset is not None:
        opts.preset = preset
    for i, p in enumerate(pairs):
        fixed, moving, fl, ml, true_mm = pair_images(p, grid)
        res = register(fixed, moving, model, opts, fl, ml)
        score = score_on_fixed_grid_mm(fl, ml, res.displacement, true_mm)
        rows.append(
            {
                "pair": i,
                "dice_identity": mean_foreground_dice(fl.array, ml.array),
                "dice_affine": res.summary.dice_affine,
                "dice_after": score.mean_dice,
                "folding_percent_fixed_grid": score.folding_percent_fixed_grid,
                "std_log_jacobian_fixed_grid": score.std_log_jacobian_fixed_grid,
                "endpoint_error_mm": score.endpoint_error_mm,
                "runtime_s": res.summary.runtime_s,
            }
        )
        log.info("pair %d: %s", i, rows[-1])
    keys = [k for k in rows[0] if k != "pair" and rows[0][k] is not None]
    means = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    return {"model": model.name, "pairs": len(rows), "mean": means, "per_pair": rows}


def evaluate_model(
    data_config: str | Path,
    model_name: str,
    pairs=8,
    split="test",
    device="auto",
    io_steps=None,
    preset=None,
) -> dict:
    """Entry point of ``deepsim evaluate``: ``data_config`` is a JSON file with a ``data`` entry
    (as in training configs)."""
    from ..api import resolve_model
    from ..modelio import load_model
    from .datasets import make_source

    cfg = read_json_config(data_config, "data config")
    data = cfg["data"] if "data" in cfg else cfg
    check_data_config(data, f"data config {data_config}")
    source = make_source(data, split, int(cfg.get("seed", 0)))
    items = [source.pair(i) for i in range(pairs)]
    grid = source.grid
    model = load_model(resolve_model(model_name, grid.spatial_dims), spatial_dims=grid.spatial_dims)
    report = evaluate_pairs(items, model, grid, device=device, io_steps=io_steps, preset=preset)
    report["data"] = data
    return report
