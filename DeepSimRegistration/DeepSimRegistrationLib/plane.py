"""Single-slice volumes as 2D images: the fixed slice's plane is the 2D world of the 2D model.

A Slicer volume with one slice still has a 3D ``IJKToRAS``, possibly oblique. Both slices are
expressed in the fixed slice's in-plane frame (origin at the fixed volume's origin, axes along its
i and j directions, in mm), registered in 2D, and the 2D displacement is put back into 3D along
those same axes.
"""

from __future__ import annotations

import numpy as np

from deepsim.geometry import Grid, Image

__all__ = ["isSingleSlice", "PlaneFrame"]


def isSingleSlice(image: Image) -> bool:
    """Whether a world-space volume image (``(K, J, I)``) has one slice."""
    return image.array.shape[0] == 1


class PlaneFrame:
    """The in-plane frame of a single-slice fixed volume (a 3D world-space :class:`Image`)."""

    def __init__(self, fixed: Image):
        if not isSingleSlice(fixed):
            raise ValueError("PlaneFrame: the fixed volume must have one slice")
        lin = fixed.grid.linear  # LPS columns of tensor axes k, j, i
        self.origin = fixed.grid.index_to_lps[:3, 3]
        self.u = lin[:, 2] / np.linalg.norm(lin[:, 2])  # along i
        v = lin[:, 1] - (lin[:, 1] @ self.u) * self.u  # along j, made orthogonal to u
        self.v = v / np.linalg.norm(v)
        self.normal = np.cross(self.u, self.v)
        self.thickness = float(np.linalg.norm(lin[:, 0]))
        self.grid3d = fixed.grid

    def to2d(self, image: Image, what: str) -> Image:
        """A single-slice world-space image as a 2D image in this frame; refuses a slice that
        does not lie in the fixed slice's plane."""
        if not isSingleSlice(image):
            raise ValueError(
                f"the {what} volume has {image.array.shape[0]} slices but the fixed volume has one; "
                "register a single slice to a single slice"
            )
        lin = image.grid.linear
        offset = image.grid.index_to_lps[:3, 3] - self.origin
        tolerance = 0.5 * self.thickness
        out_of_plane = [abs(offset @ self.normal)] + [
            abs(lin[:, a] @ self.normal) * image.array.shape[a] for a in (1, 2)
        ]
        if max(out_of_plane) > tolerance:
            raise ValueError(
                f"the {what} slice does not lie in the plane of the fixed slice "
                f"(up to {max(out_of_plane):.2f} mm off it); resample it onto that plane first"
            )
        basis = np.stack([self.u, self.v])  # (2, 3): LPS -> frame
        m = np.eye(3)
        m[:2, :2] = basis @ lin[:, 1:]  # tensor axes j, i -> frame x, y
        m[:2, 2] = basis @ offset
        return Image(image.array[0], Grid(image.array.shape[1:], m))

    def displacementTo3d(self, displacement2d: np.ndarray) -> np.ndarray:
        """``(J, I, 2)`` frame displacement (mm) -> ``(1, J, I, 3)`` LPS displacement."""
        d = displacement2d[..., :1] * self.u + displacement2d[..., 1:2] * self.v
        return d[None].astype(np.float32)
