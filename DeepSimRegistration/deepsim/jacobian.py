"""Signed Jacobian determinant of a mapping ``x -> x + u(x)``, in voxel or physical units."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["jacobian_det", "jacobian_det_numpy"]


def jacobian_det(disp: torch.Tensor, index_to_world: torch.Tensor | None = None) -> torch.Tensor:
    """Signed ``det(I + du/dx)`` by central differences (one-sided at the border).

    Args:
        disp: ``(B, D, *spatial)``. Without ``index_to_world``: voxels, channel i along tensor
            axis i. With it: world units (mm), channel i along world axis i.
        index_to_world: ``(D, D)`` linear part mapping tensor-order voxel steps to world vectors
            (direction times spacing); derivatives are then taken per world unit.

    Returns:
        ``(B, 1, *spatial)``; a value <= 0 marks folding. No ``abs()`` anywhere.
    """
    spatial_dims = disp.ndim - 2
    if spatial_dims not in (2, 3) or disp.shape[1] != spatial_dims:
        raise ValueError(f"jacobian_det(): disp must be (B, D, *spatial), got {tuple(disp.shape)}")
    if any(n < 2 for n in disp.shape[2:]):
        raise ValueError(
            f"jacobian_det(): every axis needs >= 2 voxels, got {tuple(disp.shape[2:])}"
        )
    # grads[..., i, j] = d u_i / d index_j
    grads = torch.stack(torch.gradient(disp, dim=tuple(range(2, disp.ndim))), dim=-1)
    grads = grads.movedim(1, -2)  # (B, *spatial, D, D)
    if index_to_world is not None:
        m = torch.as_tensor(index_to_world, dtype=disp.dtype, device=disp.device)
        if m.shape != (spatial_dims, spatial_dims):
            raise ValueError(
                f"jacobian_det(): index_to_world must be {spatial_dims}x{spatial_dims}"
            )
        grads = grads @ torch.linalg.inv(m)  # du/dx = du/dindex . dindex/dx
    j = grads + torch.eye(spatial_dims, dtype=disp.dtype, device=disp.device)
    if spatial_dims == 2:
        det = j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    else:  # cofactor expansion along the first row
        det = (
            j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
            - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
            + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
        )
    return det.unsqueeze(1)


def jacobian_det_numpy(disp: np.ndarray, index_to_world: np.ndarray | None = None) -> np.ndarray:
    """:func:`jacobian_det` for one ``(D, *spatial)`` numpy field; returns ``(*spatial)``."""
    t = torch.from_numpy(np.ascontiguousarray(disp, dtype=np.float64))[None]
    m = None if index_to_world is None else torch.from_numpy(np.asarray(index_to_world, np.float64))
    return jacobian_det(t, m)[0, 0].numpy()
