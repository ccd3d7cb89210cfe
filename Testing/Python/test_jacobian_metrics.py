import numpy as np
import pytest
import torch

from conftest import oblique_grid
from deepsim.jacobian import jacobian_det, jacobian_det_numpy
from deepsim.metrics import (
    dice_per_label,
    folding_percent,
    hd95,
    mean_foreground_dice,
    std_log_jacobian,
)


@pytest.mark.parametrize("dims", [2, 3])
def test_jacobian_of_affine_field_in_physical_units(dims):
    """u(x) = B x in mm on an oblique anisotropic grid: det J = det(I + B) everywhere."""
    grid = oblique_grid((9, 11, 10)[:dims])
    rng = np.random.default_rng(1)
    b = rng.normal(0, 0.15, (dims, dims))
    pts = grid.world_points()  # (*shape, D) LPS
    disp = np.moveaxis(pts @ b.T, -1, 0)  # (D, *shape) mm, world axes
    jac = jacobian_det_numpy(disp, grid.linear)
    assert np.allclose(jac, np.linalg.det(np.eye(dims) + b), atol=1e-9)


@pytest.mark.parametrize("dims", [2, 3])
def test_jacobian_in_voxels_of_affine_field(dims):
    shape = (8,) * dims
    a = (
        torch.eye(dims, dtype=torch.float64)
        + 0.1 * torch.arange(dims * dims, dtype=torch.float64).view(dims, dims) / dims
    )
    idx = torch.stack(
        torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    )
    disp = (torch.einsum("ij,j...->i...", a, idx) - idx)[None]
    det = jacobian_det(disp)
    assert torch.allclose(det, torch.linalg.det(a).expand_as(det), atol=1e-10)


def test_reflection_is_folding_signed():
    """A reflection of axis 1 (x -> -x) folds everywhere: det -1, not +1 (the abs() bug)."""
    shape = (5, 5)
    idx = torch.stack(torch.meshgrid(*[torch.arange(5.0, dtype=torch.float64)] * 2, indexing="ij"))
    disp = torch.zeros(1, 2, *shape, dtype=torch.float64)
    disp[0, 1] = (4 - idx[1]) - idx[1]
    det = jacobian_det(disp)
    assert torch.allclose(det, -torch.ones_like(det))
    assert folding_percent(det.numpy()) == 100.0


def test_dice_ignores_classes_absent_from_both():
    a = np.zeros((10, 10), int)
    b = np.zeros((10, 10), int)
    a[2:6, 2:6] = 1
    b[3:7, 2:6] = 1
    scores = dice_per_label(a, b, labels=[0, 1, 2, 3])
    assert set(scores) == {1}  # 2 and 3 are absent from both, 0 is background
    assert scores[1] == pytest.approx(2 * 12 / 32)
    assert mean_foreground_dice(a, b, labels=[1, 2, 3]) == pytest.approx(0.75)
    c = b.copy()
    c[0, 0] = 2  # present in one image only: scored 0
    assert dice_per_label(a, c)[2] == 0.0


def test_folding_and_smoothness():
    jac = np.ones((10, 10))
    jac[0, :5] = -0.1
    assert folding_percent(jac) == pytest.approx(5.0)
    assert std_log_jacobian(np.ones((4, 4))) == pytest.approx(0.0)
    assert std_log_jacobian(np.array([np.e, 1 / np.e])) == pytest.approx(1.0)


def test_hd95_of_shifted_square():
    a = np.zeros((30, 30), int)
    b = np.zeros((30, 30), int)
    a[5:15, 5:15] = 1
    b[8:18, 5:15] = 1
    assert hd95(a, b, 1) == pytest.approx(3.0)
    assert hd95(a, b, 1, spacing=[2.0, 1.0]) == pytest.approx(6.0)
    assert np.isnan(hd95(a, b, 4))
