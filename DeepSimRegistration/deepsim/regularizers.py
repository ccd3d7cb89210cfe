"""Smoothness regulariser of the displacement field."""

from __future__ import annotations

import torch

__all__ = ["diffusion"]


def diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Diffusion regulariser: mean squared forward difference of ``disp``, averaged over the
    ``D`` axes (sum of per-axis means divided by ``D``), as in the paper so its lambda values carry
    over. ``disp``: ``(B, D, *spatial)`` in voxels. Minimise; 0 for a constant field."""
    spatial_dims = disp.ndim - 2
    if spatial_dims < 1 or disp.shape[1] != spatial_dims:
        raise ValueError(f"diffusion(): disp must be (B, D, *spatial), got {tuple(disp.shape)}")
    total = disp.new_zeros(())
    for axis in range(2, disp.ndim):
        total = total + torch.diff(disp, dim=axis).pow(2).mean()
    return total / spatial_dims
