"""Spatial transformer for dense displacement fields, 2D and 3D from one code path.

Convention used everywhere in ``deepsim``: images are ``(B, C, *spatial)`` and displacements are
``(B, D, *spatial)`` in voxels of the grid they live on, channel ``i`` moving along tensor axis ``i``.
A displacement ``u`` defines the resampling map ``x -> x + u(x)``: ``warp(m, u)(x) = m(x + u(x))``.
Normalised ``[-1, 1]`` coordinates in ``x, y, z`` order exist only inside :func:`warp`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "integrate_velocity",
    "compose",
    "affine_displacement",
    "compose_affine",
    "resize_displacement",
    "interp_mode",
    "sample_at",
]


def interp_mode(spatial_dims: int) -> str:
    """The ``F.interpolate`` linear mode for ``spatial_dims`` (``bilinear`` or ``trilinear``)."""
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    if spatial_dims not in modes:
        raise ValueError(f"interp_mode(): spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    return modes[spatial_dims]


def identity_grid(
    shape: tuple[int, ...], device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Voxel index coordinates ``(1, D, *shape)``; channel ``i`` holds the index along axis ``i``."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def _check_disp(name: str, image: torch.Tensor, disp: torch.Tensor) -> int:
    spatial_dims = disp.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(
            f"{name}(): disp must be (B, D, *spatial) with D in (2, 3), got {tuple(disp.shape)}"
        )
    if disp.shape[1] != spatial_dims:
        raise ValueError(
            f"{name}(): disp must have {spatial_dims} channels for {spatial_dims}D, got {tuple(disp.shape)}"
        )
    if image.ndim != disp.ndim or image.shape[2:] != disp.shape[2:]:
        raise ValueError(
            f"{name}(): image {tuple(image.shape)} and disp {tuple(disp.shape)} must share the spatial shape"
        )
    return spatial_dims


def warp(
    image: torch.Tensor,
    disp: torch.Tensor,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding_mode: Literal["border", "zeros"] = "border",
) -> torch.Tensor:
    """Resample ``image`` at ``x + disp(x)``.

    Args:
        image: ``(B, C, *spatial)``.
        disp: ``(B, D, *spatial)`` displacement in voxels, channel ``i`` along tensor axis ``i``.
        mode: ``bilinear`` for intensities (linear in 3D too), ``nearest`` for label maps.
        padding_mode: value outside the image: ``border`` repeats the edge (the paper's choice).

    Returns:
        ``(B, C, *spatial)`` warped image.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"warp(): mode must be 'bilinear' or 'nearest', got {mode!r}")
    spatial_dims = _check_disp("warp", image, disp)
    shape = disp.shape[2:]
    coords = identity_grid(tuple(shape), disp.device, disp.dtype) + disp
    # normalise to [-1, 1] with align_corners=True, then reverse to grid_sample's x, y(, z) order
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], device=disp.device, dtype=disp.dtype)
    coords = coords * scale.view(1, spatial_dims, *([1] * spatial_dims)) - 1.0
    grid = coords.movedim(1, -1).flip(-1)
    if image.dtype != grid.dtype:
        grid = grid.to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def sample_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``image`` ``(1, C, *spatial)`` sampled linearly (edge repeated) at ``points`` ``(N, D)``,
    voxel indices in tensor order; returns ``(N, C)``. Differentiable in both."""
    dims = points.shape[1]
    if image.ndim != dims + 2 or image.shape[0] != 1:
        raise ValueError(
            f"sample_at(): image must be (1, C, *spatial) with {dims} axes, got {tuple(image.shape)}"
        )
    shape = image.shape[2:]
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], device=points.device)
    grid = (points * scale.to(points.dtype) - 1.0).flip(-1)
    grid = grid.view(1, -1, *([1] * (dims - 1)), dims).to(image.dtype)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(image.shape[1], -1).T


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Displacement of ``x -> phi_outer(phi_inner(x))``: ``inner(x) + outer(x + inner(x))``."""
    return inner + warp(outer, inner)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: the displacement of ``exp(v)`` for a stationary velocity ``v`` (voxels)."""
    if steps < 0:
        raise ValueError(f"integrate_velocity(): steps must be >= 0, got {steps}")
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = compose(disp, disp)
    return disp


def affine_displacement(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Displacement ``A x - x`` of an affine map in voxel index space.

    Args:
        matrix: ``(B, D, D + 1)`` or ``(B, D + 1, D + 1)`` acting on tensor-order voxel indices.
        shape: spatial shape of the grid.

    Returns:
        ``(B, D, *shape)`` displacement in voxels.
    """
    spatial_dims = len(shape)
    if matrix.ndim != 3 or matrix.shape[1] not in (spatial_dims, spatial_dims + 1):
        raise ValueError(
            f"affine_displacement(): matrix must be (B, {spatial_dims}, {spatial_dims + 1}), "
            f"got {tuple(matrix.shape)}"
        )
    grid = identity_grid(shape, matrix.device, matrix.dtype).flatten(2)  # (1, D, N)
    lin, trans = matrix[:, :spatial_dims, :spatial_dims], matrix[:, :spatial_dims, spatial_dims:]
    mapped = lin @ grid + trans
    return (mapped - grid).view(matrix.shape[0], spatial_dims, *shape)


def compose_affine(disp: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Displacement of ``x -> A (x + disp(x))``: the field first, then the affine (voxel indices)."""
    spatial_dims = disp.ndim - 2
    shape = tuple(disp.shape[2:])
    grid = identity_grid(shape, disp.device, disp.dtype)
    points = (grid + disp).flatten(2)
    lin, trans = matrix[:, :spatial_dims, :spatial_dims], matrix[:, :spatial_dims, spatial_dims:]
    return (lin @ points + trans).view_as(disp) - grid


def resize_displacement(disp: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a displacement to another grid of the same field of view, rescaling its vectors.

    Grids share corners (``align_corners=True``), so a vector along axis ``i`` is multiplied by
    ``(shape[i] - 1) / (old[i] - 1)``: displacements in voxels change length with resolution.
    """
    spatial_dims = disp.ndim - 2
    old = disp.shape[2:]
    if len(shape) != spatial_dims:
        raise ValueError(
            f"resize_displacement(): shape must have {spatial_dims} entries, got {shape}"
        )
    out = F.interpolate(disp, size=tuple(shape), mode=interp_mode(spatial_dims), align_corners=True)
    factors = [(n - 1) / max(o - 1, 1) for n, o in zip(shape, old)]
    scale = torch.tensor(factors, device=disp.device, dtype=disp.dtype)
    return out * scale.view(1, spatial_dims, *([1] * spatial_dims))
