"""The one way a registration is scored: on the fixed image's grid, with the field in LPS mm.

Every evaluation (``deepsim evaluate``, model cards, the benchmarks) scores the complete
fixed -> moving mapping ``d(x)`` as ``deepsim register`` writes it (``(*fixed.shape, D)`` LPS mm,
resampling convention), so numbers from different tools and scripts mean the same thing.
The registration's own summary reports folding on the *model* grid, where the field lives; the
names below say which grid and unit each number has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .geometry import Image
from .metrics import dice_per_label, folding_percent, std_log_jacobian

__all__ = ["FixedGridScore", "score_on_fixed_grid_mm"]


@dataclass
class FixedGridScore:
    """Dice of the warped moving labels, the Jacobian of the mapping in mm (central differences on
    the fixed grid) and, when the true field is known, the endpoint error in mm over the fixed
    foreground. All restricted to ``mask`` when one was given."""

    dice_per_label: dict[str, float]
    mean_dice: float
    folding_percent_fixed_grid: float
    std_log_jacobian_fixed_grid: float
    endpoint_error_mm: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def score_on_fixed_grid_mm(
    fixed_labels: Image,
    moving_labels: Image,
    displacement_mm: np.ndarray,
    true_displacement_mm: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    labels=None,
) -> FixedGridScore:
    """Score ``displacement_mm`` (``(*fixed.shape, D)``, LPS mm). The moving labels are resampled
    through it by nearest neighbour (SimpleITK, as any ITK tool applies the written field);
    ``labels``: the labels to score (all foreground labels present by default)."""
    import torch

    from .jacobian import jacobian_det
    from .register import warp_image

    grid = fixed_labels.grid
    if displacement_mm.shape != (*grid.shape, grid.spatial_dims):
        raise ValueError(
            f"displacement of shape {displacement_mm.shape} is not a field on the fixed grid "
            f"{grid.shape}"
        )
    keep = np.ones(grid.shape, bool) if mask is None else np.asarray(mask, bool)
    warped = warp_image(moving_labels, grid, displacement_mm, "nearest").array
    dice = dice_per_label(np.where(keep, fixed_labels.array, 0), np.where(keep, warped, 0), labels)
    field = torch.from_numpy(np.ascontiguousarray(displacement_mm, np.float64)).movedim(-1, 0)
    jac = jacobian_det(field[None], grid.linear)[0, 0].numpy()
    epe = None
    if true_displacement_mm is not None:
        region = keep & (fixed_labels.array > 0)
        epe = float(np.linalg.norm(displacement_mm - true_displacement_mm, axis=-1)[region].mean())
    return FixedGridScore(
        {str(k): v for k, v in dice.items()},
        float(np.mean(list(dice.values()))) if dice else float("nan"),
        folding_percent(jac, keep),
        std_log_jacobian(jac, keep),
        epe,
    )
