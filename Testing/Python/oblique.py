"""Oblique rotations for geometry tests (numpy only, so torch-free tests can use them)."""

from __future__ import annotations

import numpy as np


def rotation(dims: int, angles=(0.3, -0.2, 0.25)) -> np.ndarray:
    """An oblique proper rotation (2D or 3D)."""
    if dims == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        r = r @ m
    return r
