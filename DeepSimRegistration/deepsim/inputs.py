"""Input checks: a file is read completely or refused, and an image must be what its role needs.

SimpleITK reads a truncated ``.nii`` or ``.nii.gz`` without error and fills the missing voxels
with zeros, so :func:`check_file_complete` verifies gzip streams end to end (CRC and length) and
compares the voxel data a NIfTI or MetaImage header announces with what the file holds. The other
checks take images already read: usable geometry, labels on their image's grid, sizes the pipeline
can work with, displacement fields that are finite and overlap the image they are applied to.
Every error is a ``ValueError`` naming the input and the problem in the user's terms.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "MIN_VOXELS",
    "MIN_MODEL_VOXELS",
    "MAX_LABELS",
    "check_file_complete",
    "check_sitk_geometry",
    "check_labels",
    "check_model_spacing",
    "check_pipeline_size",
    "check_displacement",
    "fmt",
    "itk_reason",
]

MIN_VOXELS = 4
"""Voxels an image needs along each axis (ITK's smoothing filters need four)."""
MIN_MODEL_VOXELS = 9
"""Model-grid voxels needed along each axis: the similarity heatmaps' local NCC window is 9 wide."""
MAX_LABELS = 1000
"""More distinct values than this and a 'label map' is an intensity image."""
AFFINE_SPACING_MM = 3.0
"""The affine pre-alignment block-averages to about this spacing (deepsim.affine's default)."""

_CHUNK = 1 << 22
_NIFTI_HEADER = 540


def fmt(values, unit: str = "") -> str:
    """``(1.5, -2, 0.25) mm``: numbers as a user writes them (no ``np.float64(...)``)."""
    text = ", ".join(f"{float(v):.6g}" for v in np.ravel(values))
    return f"({text})" + (f" {unit}" if unit else "")


def itk_reason(err: Exception) -> str:
    """The problem an ITK exception names, without its source paths, object addresses or raw
    matrices (``Bad direction, determinant is 0`` -> a sentence about the file's orientation)."""
    text = str(err)
    if "Bad direction" in text:
        return "its orientation (direction cosines) is degenerate: two axes point the same way"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = next((x for x in lines if "ERROR:" in x), lines[-1] if lines else "unknown error")
    line = re.sub(r".*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", line)
    return line.split(". ")[0].strip().rstrip(".") or "unknown error"


def check_file_complete(path: str | Path, what: str) -> None:
    """Refuse a file whose compressed stream is cut short or corrupt, or whose voxel data is
    shorter than its header announces (NIfTI ``.nii[.gz]``, MetaImage ``.mha``)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        head, length = _gunzip_checked(path, what)
    else:
        with open(path, "rb") as f:
            head = f.read(_NIFTI_HEADER if name.endswith(".nii") else 1 << 16)
        length = path.stat().st_size
    if name.endswith((".nii", ".nii.gz")):
        expected = _nifti_bytes(head)
    elif name.endswith(".mha"):
        expected = _metaimage_bytes(head)
    else:
        return
    if expected is not None and length < expected:
        raise ValueError(
            f"cannot read {what} {path}: the file is truncated: its header announces {expected} "
            f"bytes but the file holds "
            f"{length} ({100 * length / expected:.0f} %); it was cut short (an interrupted copy "
            "or download?)"
        )


def _gunzip_checked(path: Path, what: str) -> tuple[bytes, int]:
    """``(first bytes, decompressed length)`` of a gzip file read to its end (CRC checked)."""
    head, length = b"", 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                if len(head) < (1 << 16):
                    head += chunk[: (1 << 16) - len(head)]
                length += len(chunk)
    except EOFError:
        raise ValueError(
            f"cannot read {what} {path}: the file is truncated: its compressed data ends early"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(
            f"cannot read {what} {path}: its compressed data is damaged ({err})"
        ) from None
    return head, length


def _nifti_bytes(head: bytes) -> int | None:
    """Bytes a single-file NIfTI-1/2 needs (header + voxel data), or None when not one."""
    if len(head) < 348:
        return None
    for order in "<>":
        size = int(np.frombuffer(head[:4], f"{order}i4")[0])
        if size == 348:
            magic = head[344:348]
            dims = np.frombuffer(head[40:56], f"{order}i2").astype(np.int64)
            bitpix = int(np.frombuffer(head[72:74], f"{order}i2")[0])
            offset = float(np.frombuffer(head[108:112], f"{order}f4")[0])
            break
        if size == 540 and len(head) >= 540:
            magic = head[4:8]
            bitpix = int(np.frombuffer(head[14:16], f"{order}i2")[0])
            dims = np.frombuffer(head[16:80], f"{order}i8")
            offset = float(np.frombuffer(head[168:176], f"{order}i8")[0])
            break
    else:
        return None
    if not magic.startswith(b"n+"):  # 'ni1': the voxels are in a separate .img file
        return None
    n = int(dims[0])
    if not 1 <= n <= 7 or bitpix <= 0 or np.any(dims[1 : n + 1] <= 0) or not math.isfinite(offset):
        return None
    return int(offset) + int(np.prod(dims[1 : n + 1])) * bitpix // 8


_MET_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _metaimage_bytes(head: bytes) -> int | None:
    """Bytes a ``.mha`` with its data inline needs (header + data), or None when not known."""
    end = re.search(rb"ElementDataFile\s*=\s*LOCAL\s*?\r?\n", head)
    if end is None:
        return None
    fields = {}
    for line in head[: end.start()].decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
    try:
        if fields.get("CompressedData", "False").lower() == "true":
            data = int(fields["CompressedDataSize"])
        else:
            size = [int(v) for v in fields["DimSize"].split()]
            channels = int(fields.get("ElementNumberOfChannels", 1))
            data = int(np.prod(size)) * channels * _MET_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None
    return end.end() + data


def check_sitk_geometry(image, what: str) -> None:
    """Refuse a SimpleITK image whose spacing, origin or direction cannot place it in space."""
    d = image.GetDimension()
    spacing = np.asarray(image.GetSpacing(), np.float64)
    origin = np.asarray(image.GetOrigin(), np.float64)
    direction = np.asarray(image.GetDirection(), np.float64).reshape(d, d)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(
            f"{what} has unusable voxel spacing {fmt(spacing, 'mm')}: it must be positive"
        )
    if not np.all(np.isfinite(origin)):
        raise ValueError(f"{what} has a non-finite origin {fmt(origin, 'mm')}")
    if not np.all(np.isfinite(direction)):
        raise ValueError(f"{what} has a non-finite orientation (direction cosines)")
    if abs(np.linalg.det(direction)) < 1e-6:
        raise ValueError(
            f"{what} has a degenerate orientation: two of its axes point the same way, so its "
            "voxels do not span space (fix the file's direction / sform)"
        )


def check_labels(labels, image, what: str) -> None:
    """A label map holds whole numbers with some foreground, on its image's grid (shape, origin,
    spacing and direction)."""
    arr = labels.array
    if arr.ndim != labels.grid.spatial_dims:
        raise ValueError(f"{what} must be a scalar label map, not a vector image")
    if labels.grid.shape != image.grid.shape:
        raise ValueError(
            f"{what} have {_size(labels.grid.shape)} voxels but their image has "
            f"{_size(image.grid.shape)}; a label map must share its image's grid"
        )
    a, b = labels.grid, image.grid
    tol = 1e-3 * float(b.spacing.min())
    d = b.spatial_dims
    if np.abs(a.index_to_lps[:d, d] - b.index_to_lps[:d, d]).max() > tol:
        raise ValueError(
            f"{what} are not on their image's grid: origin {fmt(a.index_to_lps[:d, d], 'mm')} "
            f"vs {fmt(b.index_to_lps[:d, d], 'mm')}"
        )
    if np.abs(a.spacing - b.spacing).max() > tol:
        raise ValueError(
            f"{what} are not on their image's grid: spacing {fmt(a.spacing[::-1], 'mm')} "
            f"vs {fmt(b.spacing[::-1], 'mm')}"
        )
    if np.abs(a.linear - b.linear).max() > tol:
        raise ValueError(f"{what} are not on their image's grid: their orientations differ")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} have NaN or infinite values; a label map holds whole numbers")
        frac = arr[arr != np.round(arr)]
        if frac.size:
            raise ValueError(
                f"{what} have {frac.size} voxels with fractional values (e.g. {float(frac[0]):.6g}); "
                "a label map holds whole numbers: is this an intensity image?"
            )
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{what} have voxel type {arr.dtype}; a label map holds whole numbers")
    values = np.unique(arr)
    if len(values) > MAX_LABELS:
        raise ValueError(
            f"{what} have {len(values)} distinct values (more than {MAX_LABELS}): this looks like an "
            "intensity image, not a label map"
        )
    if not np.any(values != 0):
        raise ValueError(f"{what} have no foreground (every voxel is 0); Dice would be undefined")


def check_model_spacing(spacing, source: str) -> None:
    """The model grid spacing (mm, scalar or per axis) must be positive and finite."""
    values = np.atleast_1d(np.asarray(spacing, dtype=object))
    try:
        floats = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        floats = np.array([np.nan])
    if not np.all(np.isfinite(floats)) or np.any(floats <= 0):
        shown = ", ".join(str(v) for v in values)
        raise ValueError(f"{source} must be a positive number of mm, got {shown}")


def check_pipeline_size(fixed, moving, model_grid, affine: bool) -> None:
    """Images large enough along every axis for the pipeline's filters, said in voxels and mm
    (instead of an ITK or PyTorch kernel-size error)."""
    for image, what in ((fixed, "fixed image"), (moving, "moving image")):
        shape = image.grid.shape[::-1]  # x, y, z as the user counts axes
        spacing = image.grid.spacing[::-1]
        for axis, (n, s) in enumerate(zip(shape, spacing)):
            if n < MIN_VOXELS:
                raise ValueError(
                    f"{what} has {n} voxel(s) along axis {axis + 1} ({_size(shape)} voxels); "
                    f"registration needs at least {MIN_VOXELS} along each axis"
                )
            if affine and n // max(1, round(AFFINE_SPACING_MM / s)) < MIN_VOXELS:
                raise ValueError(
                    f"{what} is only {n * s:.3g} mm wide along axis {axis + 1}: too small for the "
                    f"affine pre-alignment, which works at about {AFFINE_SPACING_MM:g} mm voxels "
                    "(needs at least four); use --no-affine"
                )
    if min(model_grid.shape) < MIN_MODEL_VOXELS:
        raise ValueError(
            f"the fixed image's field of view gives a model grid of only "
            f"{_size(model_grid.shape[::-1])} voxels at {fmt(model_grid.spacing[::-1], 'mm')}; "
            f"registration needs at least {MIN_MODEL_VOXELS} along each axis: use a finer "
            "--model-spacing or a larger field of view"
        )


def check_displacement(field, image_grid, what: str) -> None:
    """A displacement field of finite vectors whose mapped points land in the image it is
    applied to (at least 5 % of them)."""
    dims = field.grid.spatial_dims
    arr = field.array
    if arr.ndim != dims + 1 or arr.shape[-1] != dims:
        comps = arr.shape[-1] if arr.ndim == dims + 1 else 1
        raise ValueError(
            f"{what} is not a displacement field of {dims}D vectors "
            f"({comps} component(s) per voxel)"
        )
    bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=-1)))
    if bad:
        raise ValueError(f"{what} has {bad} voxels with NaN or infinite displacement vectors")
    step = max(1, int(round(max(field.grid.shape) / 32)))
    sl = tuple(slice(None, None, step) for _ in range(dims))
    pts = field.grid.world_points(step) + arr[sl].astype(np.float64)
    idx = pts.reshape(-1, dims) @ image_grid.lps_to_index[:dims, :dims].T
    idx += image_grid.lps_to_index[:dims, dims]
    inside = np.all((idx >= -0.5) & (idx <= np.array(image_grid.shape) - 0.5), axis=1).mean()
    if inside < 0.05:
        raise ValueError(
            f"{what} maps only {100 * inside:.1f} % of its grid into the image it is applied to: "
            "they do not overlap in physical space (is it the transform for this image?)"
        )


def _size(shape) -> str:
    return " x ".join(str(int(n)) for n in shape)
