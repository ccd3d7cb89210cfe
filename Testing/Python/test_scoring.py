"""The one scoring function: on the fixed grid, field in LPS mm, on an oblique anisotropic grid."""

import numpy as np
import pytest

from conftest import oblique_grid
from deepsim.geometry import Image
from deepsim.register import warp_image
from deepsim.scoring import score_on_fixed_grid_mm


def _labels(grid, shift_mm=(0.0, 0.0, 0.0)):
    """A ball (label 1) inside a larger ball (label 2), centred in the field of view + shift."""
    rel = grid.world_points() - grid.corners().mean(axis=0) - np.asarray(shift_mm)
    r = np.linalg.norm(rel, axis=-1)
    return Image(np.where(r < 6, 1, np.where(r < 11, 2, 0)).astype(np.int16), grid)


def test_a_known_translation_scores_perfectly_and_identity_does_not():
    grid = oblique_grid((24, 28, 22))
    t = np.array([3.0, -2.0, 1.5])  # moving = fixed shifted by t (LPS mm)
    fixed, moving = _labels(grid), _labels(grid, t)
    truth = np.broadcast_to(t, (*grid.shape, 3)).copy()  # x + t is the moving point
    exact = score_on_fixed_grid_mm(fixed, moving, truth, truth)
    assert exact.mean_dice > 0.85 and exact.endpoint_error_mm == pytest.approx(0, abs=1e-9)
    assert exact.folding_percent_fixed_grid == 0
    assert exact.std_log_jacobian_fixed_grid == pytest.approx(0, abs=1e-9)
    ident = score_on_fixed_grid_mm(fixed, moving, np.zeros_like(truth), truth)
    assert ident.mean_dice < exact.mean_dice - 0.15, (ident.mean_dice, exact.mean_dice)
    assert ident.endpoint_error_mm == pytest.approx(np.linalg.norm(t))


def test_folding_is_measured_in_mm_and_restricted_to_the_mask():
    grid = oblique_grid((20, 20, 20))
    lab = _labels(grid)
    pts = grid.world_points()
    centre = grid.corners().mean(axis=0)
    # d(x) = -2 (x - c) inside a slab: x + d(x) = -(x - c) + c, a reflection (det < 0)
    inside = np.zeros(grid.shape, bool)
    inside[:10] = True
    disp = np.where(inside[..., None], -2.0 * (pts - centre), 0.0)
    score = score_on_fixed_grid_mm(lab, lab, disp)
    assert 30 < score.folding_percent_fixed_grid < 60
    masked = score_on_fixed_grid_mm(lab, lab, disp, mask=~inside)
    assert masked.folding_percent_fixed_grid < score.folding_percent_fixed_grid / 2


def test_scores_the_labels_as_the_written_field_warps_them():
    grid = oblique_grid((16, 18, 14))
    lab = _labels(grid, (1.0, 0.0, 0.0))
    disp = np.random.default_rng(0).normal(0, 0.6, (*grid.shape, 3))
    warped = warp_image(lab, grid, disp, "nearest")
    score = score_on_fixed_grid_mm(warped, lab, disp)
    assert score.mean_dice == pytest.approx(1.0)


def test_a_field_of_another_grid_is_refused():
    grid = oblique_grid((8, 8, 8))
    lab = _labels(grid)
    with pytest.raises(ValueError, match="not a field on the fixed grid"):
        score_on_fixed_grid_mm(lab, lab, np.zeros((8, 8, 7, 3)))
