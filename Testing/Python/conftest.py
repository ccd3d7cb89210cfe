"""Shared fixtures: oblique anisotropic grids with non-zero origins, tiny model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepsim.geometry import Grid, Image
from oblique import rotation  # noqa: F401  (re-exported for the tests)

REGISTER_OUTPUTS = frozenset(
    {
        "warped.nii.gz",
        "displacement.nii.gz",
        "jacobian.nii.gz",
        "summary.json",
        "similarity_deepsim_before.nii.gz",
        "similarity_deepsim_after.nii.gz",
        "similarity_ncc_before.nii.gz",
        "similarity_ncc_after.nii.gz",
    }
)
"""What ``deepsim register`` writes without labels (figure off)."""


def oblique_grid(shape, spacing=None, origin=None) -> Grid:
    """Grid with an oblique direction, anisotropic spacing and non-zero origin (tensor order)."""
    d = len(shape)
    spacing = np.asarray(spacing if spacing is not None else [1.3, 0.9, 1.7][:d])
    origin = np.asarray(origin if origin is not None else [12.5, -31.0, 7.25][:d])
    m = np.eye(d + 1)
    m[:d, :d] = rotation(d) @ np.diag(spacing)
    m[:d, d] = origin
    return Grid(tuple(shape), m)


def blob_image(grid: Grid, centre_shift=None, scale=60.0) -> Image:
    """A smooth anisotropic Gaussian blob plus a ramp, in world coordinates (LPS mm)."""
    pts = grid.world_points()
    centre = grid.corners().mean(axis=0) + (0 if centre_shift is None else np.asarray(centre_shift))
    rel = pts - centre
    radii = np.array([9.0, 12.0, 10.0][: grid.spatial_dims])
    val = np.exp(-0.5 * ((rel / radii) ** 2).sum(-1)) * 200 + 0.05 * rel[..., 0] + scale
    return Image(val.astype(np.float32), grid)


def make_model_file(
    path, dims: int, channels=(8, 16, 32), spacing=2.0, n_classes=4, seed=0, info=None
):
    """A small random-init registration model file (near-identity prediction)."""
    from deepsim.modelio import save_model
    from deepsim.networks import NetworkConfig, build_network

    torch.manual_seed(seed)
    rc = NetworkConfig("registration", dims, list(channels))
    ec = NetworkConfig("segmentation", dims, list(channels), n_classes=n_classes)
    config = {
        "name": f"tiny-{dims}d",
        "spatial_dims": dims,
        "networks": {"registration": rc.to_dict(), "extractor": ec.to_dict()},
        "preprocessing": {"spacing": spacing},
        "loss": {"similarity": "deepsim", "lambda": 1.0},
        "info": info or {},
    }
    save_model(path, {"registration": build_network(rc), "extractor": build_network(ec)}, config)
    return path


@pytest.fixture(scope="session")
def tiny_model_2d(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("models") / "tiny2d.pt", 2, spacing=1.0)


@pytest.fixture(scope="session")
def tiny_model_3d(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("models") / "tiny3d.pt", 3, spacing=2.0)
