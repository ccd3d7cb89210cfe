"""Image grids in physical space: the one geometry path shared by the command line and Slicer.

Frames, named in every function:

* **tensor index**: voxel indices in array order, ``(k, j, i)`` in 3D, as ``sitk.GetArrayFromImage``
  and ``slicer.util.arrayFromVolume`` return them;
* **ijk**: Slicer's voxel index order ``(i, j, k)``, the reverse of tensor order;
* **LPS world** (mm): the frame of ITK, SimpleITK and the files they write; used throughout deepsim;
* **RAS world** (mm): Slicer's frame in memory; ``RAS = diag(-1, -1, 1) LPS``.

A :class:`Grid` is a tensor-order shape plus one homogeneous matrix ``index_to_lps`` (tensor index
to LPS), so spacing, direction and axis order live in one place.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Grid",
    "Image",
    "LPS_TO_RAS",
    "read_image",
    "read_vector_image",
    "write_image",
    "to_sitk",
    "from_sitk",
    "resample",
    "model_grid",
    "sample_on_grid",
    "overlap_fraction",
    "affine_to_sitk",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _flip(spatial_dims: int) -> np.ndarray:
    """Homogeneous LPS <-> RAS flip for 2D or 3D world coordinates."""
    return np.diag([-1.0, -1.0] + [1.0] * (spatial_dims - 2) + [1.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: ``shape`` in tensor order and ``index_to_lps``, a homogeneous
    ``(D+1, D+1)`` matrix mapping tensor-order voxel indices to LPS world points in mm."""

    shape: tuple[int, ...]
    index_to_lps: np.ndarray

    def __post_init__(self):
        d = len(self.shape)
        m = np.asarray(self.index_to_lps, dtype=np.float64)
        if d not in (2, 3) or m.shape != (d + 1, d + 1):
            raise ValueError(
                f"Grid: shape {self.shape} needs a {d + 1}x{d + 1} matrix, got {m.shape}"
            )
        if abs(np.linalg.det(m[:d, :d])) < 1e-12:
            raise ValueError("Grid: index_to_lps is singular")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "index_to_lps", m)

    @property
    def spatial_dims(self) -> int:
        return len(self.shape)

    @property
    def linear(self) -> np.ndarray:
        """``(D, D)``: world step (mm, LPS) of one voxel step along each tensor axis (columns)."""
        d = self.spatial_dims
        return self.index_to_lps[:d, :d]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each tensor axis."""
        return np.linalg.norm(self.linear, axis=0)

    @property
    def lps_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_lps)

    def index_to_ras(self) -> np.ndarray:
        """Homogeneous tensor index to RAS matrix."""
        return _flip(self.spatial_dims) @ self.index_to_lps

    def ijk_to_ras(self) -> np.ndarray:
        """Slicer's ``IJKToRAS`` (ijk index order, RAS world)."""
        d = self.spatial_dims
        rev = np.eye(d + 1)
        rev[:d, :d] = np.eye(d)[::-1]
        return self.index_to_ras() @ rev

    @classmethod
    def from_ijk_to_ras(cls, shape: tuple[int, ...], ijk_to_ras: np.ndarray) -> "Grid":
        """Grid of a Slicer volume: ``shape`` of ``arrayFromVolume`` (tensor order) and its
        ``IJKToRAS`` 4x4 matrix."""
        d = len(shape)
        rev = np.eye(d + 1)
        rev[:d, :d] = np.eye(d)[::-1]
        return cls(shape, _flip(d) @ np.asarray(ijk_to_ras, np.float64) @ rev)

    @classmethod
    def from_sitk(cls, image) -> "Grid":
        d = image.GetDimension()
        direction = np.asarray(image.GetDirection(), np.float64).reshape(d, d)
        spacing = np.asarray(image.GetSpacing(), np.float64)
        m = np.eye(d + 1)
        m[:d, :d] = (direction * spacing)[:, ::-1]  # columns i, j, k -> tensor order k, j, i
        m[:d, d] = image.GetOrigin()
        return cls(tuple(image.GetSize()[::-1]), m)

    def sitk_geometry(self) -> tuple[tuple, tuple, tuple, tuple]:
        """``(size, spacing, origin, direction)`` as SimpleITK wants them (x, y, z order)."""
        lin = self.linear[:, ::-1]
        spacing = np.linalg.norm(lin, axis=0)
        direction = lin / spacing
        return (
            tuple(int(n) for n in self.shape[::-1]),
            tuple(float(s) for s in spacing),
            tuple(float(o) for o in self.index_to_lps[: self.spatial_dims, -1]),
            tuple(float(v) for v in direction.ravel()),
        )

    def reference(self):
        """An empty SimpleITK image with this geometry, for ``sitk.Resample``."""
        import SimpleITK as sitk

        size, spacing, origin, direction = self.sitk_geometry()
        ref = sitk.Image(list(size), sitk.sitkUInt8)
        ref.SetSpacing(spacing)
        ref.SetOrigin(origin)
        ref.SetDirection(direction)
        return ref

    def world_points(self, step: int = 1) -> np.ndarray:
        """LPS points of every ``step``-th voxel, ``(*shape, D)``."""
        axes = [np.arange(0, n, step, dtype=np.float64) for n in self.shape]
        idx = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        return idx @ self.linear.T + self.index_to_lps[: self.spatial_dims, -1]

    def corners(self) -> np.ndarray:
        """LPS points of the ``2**D`` corner voxel centres, ``(2**D, D)``."""
        d = self.spatial_dims
        idx = (
            np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(d, -1).T
        )
        return idx @ self.linear.T + self.index_to_lps[:d, -1]


@dataclass(eq=False)
class Image:
    """An image: ``array`` in tensor order on ``grid``; a vector image has a trailing component axis."""

    array: np.ndarray
    grid: Grid

    def __post_init__(self):
        d = self.grid.spatial_dims
        if tuple(self.array.shape[:d]) != self.grid.shape or self.array.ndim not in (d, d + 1):
            raise ValueError(
                f"Image: array shape {self.array.shape} != grid shape {self.grid.shape}"
            )


def from_sitk(image) -> Image:
    """SimpleITK scalar image to :class:`Image` (float32 unless integer labels)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per pixel"
        )
    return Image(sitk.GetArrayFromImage(image), Grid.from_sitk(image))


def to_sitk(image: Image, vector: bool = False):
    """:class:`Image` to SimpleITK; ``vector=True`` for ``(*shape, D)`` arrays of world vectors."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.ascontiguousarray(image.array), isVector=vector)
    _, spacing, origin, direction = image.grid.sitk_geometry()
    out.SetSpacing(spacing)
    out.SetOrigin(origin)
    out.SetDirection(direction)
    return out


def read_image(path: str | Path, what: str = "image") -> Image:
    """Read a 2D or 3D scalar image with SimpleITK, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what} path is not a file: {path}")
    image = _read_checked(path, what)
    try:
        return from_sitk(image)
    except ValueError as err:
        raise ValueError(f"{what} {path}: {err}") from err


def read_vector_image(path: str | Path, what: str = "image") -> Image:
    """Read a vector image (e.g. a displacement field): array ``(*shape, C)`` in tensor order."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    image = _read_checked(path, what)
    return Image(sitk.GetArrayFromImage(image), Grid.from_sitk(image))


def _read_checked(path: Path, what: str):
    """``sitk.ReadImage`` of a 2D or 3D file that is complete and placed usably in space."""
    import SimpleITK as sitk

    from .inputs import check_file_complete, check_sitk_geometry, itk_reason

    check_file_complete(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"cannot read {what} {path}: {itk_reason(err)}") from None
    if image.GetDimension() not in (2, 3):
        raise ValueError(
            f"{what} {path} is {image.GetDimension()}D; only 2D and 3D images are supported"
        )
    check_sitk_geometry(image, f"{what} {path}")
    return image


def write_image(image: Image, path: str | Path, vector: bool = False) -> None:
    """Write with SimpleITK; ``.gz`` files use fast gzip level 1."""
    import SimpleITK as sitk

    sitk.WriteImage(
        to_sitk(image, vector=vector), str(path), useCompression=True, compressionLevel=1
    )


def affine_to_sitk(matrix: np.ndarray):
    """Homogeneous LPS matrix (fixed point -> moving point) to a ``sitk.AffineTransform``."""
    import SimpleITK as sitk

    d = matrix.shape[0] - 1
    t = sitk.AffineTransform(d)
    t.SetMatrix(tuple(float(v) for v in matrix[:d, :d].ravel()))
    t.SetTranslation(tuple(float(v) for v in matrix[:d, d]))
    return t


def resample(
    image: Image,
    grid: Grid,
    fixed_to_moving: np.ndarray | None = None,
    interpolator: str = "linear",
    default: float = 0.0,
    extrapolate: bool = False,
) -> Image:
    """Resample ``image`` onto ``grid`` (SimpleITK). ``fixed_to_moving``: optional homogeneous LPS
    affine mapping points of ``grid`` to points of ``image`` (resampling convention). Outside
    ``image``'s field of view: ``default``, or with ``extrapolate`` the nearest voxel's value."""
    import SimpleITK as sitk

    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolator not in interp:
        raise ValueError(
            f"resample(): interpolator must be one of {sorted(interp)}, got {interpolator!r}"
        )
    transform = (
        affine_to_sitk(fixed_to_moving)
        if fixed_to_moving is not None
        else sitk.Transform(grid.spatial_dims, sitk.sitkIdentity)
    )
    src = to_sitk(image)
    out = sitk.Resample(
        src,
        grid.reference(),
        transform,
        interp[interpolator],
        default,
        src.GetPixelID(),
        extrapolate,
    )
    return Image(sitk.GetArrayFromImage(out), grid)


def _closest_axes(direction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Signed permutation of ``direction``'s columns closest to ``target``'s columns."""
    d = direction.shape[0]
    out = np.zeros_like(direction)
    free = list(range(d))
    for t in range(d):
        dots = [abs(direction[:, c] @ target[:, t]) for c in free]
        c = free.pop(int(np.argmax(dots)))
        out[:, t] = direction[:, c] * np.sign(direction[:, c] @ target[:, t])
    return out


def model_grid(
    reference: Grid,
    spacing: float | list[float],
    multiple: int = 8,
    orientation: np.ndarray | None = None,
    max_voxels: int | None = None,
) -> Grid:
    """The grid a network runs on: covers ``reference``'s field of view at ``spacing`` mm, with a
    size that is a multiple of ``multiple`` along every axis, centred on ``reference``.

    Its axes are ``reference``'s axes, permuted and flipped to be closest to ``orientation``
    (a ``(D, D)`` LPS direction whose columns are the model's tensor axes; identity by default),
    so a model trained in one anatomical orientation sees that orientation whatever the file's.
    """
    d = reference.spatial_dims
    target = np.eye(d)[:, ::-1] if orientation is None else np.asarray(orientation, np.float64)
    direction = _closest_axes(reference.linear / reference.spacing, target)
    spacing = np.broadcast_to(np.asarray(spacing, np.float64), (d,))
    # field of view: the reference's voxel boxes (half a voxel beyond the corner centres)
    half = 0.5 * reference.linear @ np.ones(d)
    corners = reference.corners()
    centre = corners.mean(axis=0)
    extent_pts = np.concatenate([corners - centre, -(corners - centre)]) @ direction
    extent = 2 * np.abs(extent_pts).max(axis=0) + 2 * np.abs(half @ direction)
    size = np.maximum(np.ceil(extent / spacing - 1e-6), 1).astype(int)
    size = (np.ceil(size / multiple) * multiple).astype(int)
    if max_voxels is not None and int(np.prod(size)) > max_voxels:
        raise MemoryError(
            f"the model grid would have {int(np.prod(size))} voxels "
            f"({' x '.join(str(int(n)) for n in size[::-1])}), more than the "
            f"limit of {max_voxels}; use a coarser model grid spacing"
        )
    lin = direction * spacing
    origin = centre - lin @ ((size - 1) / 2.0)
    m = np.eye(d + 1)
    m[:d, :d] = lin
    m[:d, d] = origin
    return Grid(tuple(size), m)


def sample_on_grid(values, src: Grid, dst: Grid, fixed_to_src: np.ndarray | None = None):
    """Linearly interpolate ``values`` ``(C, *src.shape)`` at the voxels of ``dst``, clamping to the
    border outside ``src`` (as Slicer's grid transforms do). ``fixed_to_src``: optional homogeneous
    LPS map applied to ``dst``'s points first. Accepts numpy or torch; returns the same kind,
    ``(C, *dst.shape)`` float32."""
    import torch
    import torch.nn.functional as F

    is_numpy = isinstance(values, np.ndarray)
    vals = (
        torch.from_numpy(np.ascontiguousarray(values, np.float32)) if is_numpy else values.float()
    )
    d = dst.spatial_dims
    m = (
        src.lps_to_index
        @ (fixed_to_src if fixed_to_src is not None else np.eye(d + 1))
        @ dst.index_to_lps
    )
    theta = _normalized(src.shape) @ m @ np.linalg.inv(_normalized(dst.shape))
    theta = torch.as_tensor(theta[:d], dtype=torch.float32, device=vals.device)[None]
    with warnings.catch_warnings():  # unit-size axes: handled in _normalized
        warnings.filterwarnings("ignore", message=".*unit-size grids.*")
        grid = F.affine_grid(theta, [1, vals.shape[0], *dst.shape], align_corners=True)
    out = F.grid_sample(
        vals[None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )[0]
    return out.cpu().numpy() if is_numpy else out


def _normalized(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous map from tensor-order voxel indices to ``grid_sample``'s normalised ``x, y(, z)``
    coordinates (``align_corners=True``): the axis order is reversed, indices scaled to [-1, 1]."""
    d = len(shape)
    m = np.zeros((d + 1, d + 1))
    for axis, n in enumerate(shape):
        m[d - 1 - axis, axis] = 2.0 / max(n - 1, 1)
        # affine_grid puts the one sample of a unit-size axis at 0 (torch >= 1.3), not at -1
        m[d - 1 - axis, d] = -1.0 if n > 1 else 0.0
    m[d, d] = 1.0
    return m


def overlap_fraction(a: Grid, b: Grid, fixed_to_moving: np.ndarray | None = None) -> float:
    """Fraction of ``a``'s voxels (sampled) whose point, mapped by ``fixed_to_moving``, lies inside
    ``b``'s field of view."""
    step = max(1, int(round(max(a.shape) / 32)))
    pts = a.world_points(step).reshape(-1, a.spatial_dims)
    if fixed_to_moving is not None:
        pts = pts @ fixed_to_moving[:-1, :-1].T + fixed_to_moving[:-1, -1]
    idx = pts @ b.lps_to_index[:-1, :-1].T + b.lps_to_index[:-1, -1]
    inside = np.all((idx >= -0.5) & (idx <= np.array(b.shape) - 0.5), axis=1)
    return float(inside.mean())
