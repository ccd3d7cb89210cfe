"""Intensity normalisation as the models are trained with it."""

from __future__ import annotations

import numpy as np

__all__ = ["normalize_intensity", "check_finite_nonconstant"]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite_nonconstant(array: np.ndarray, what: str) -> None:
    """Refuse empty, non-finite, beyond-float32 or constant images with an error naming ``what``
    (the pipeline computes in float32; a value beyond its range would become infinite there)."""
    if array.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"{what} has {bad} NaN or infinite voxels; fix or mask them before registration"
        )
    big = np.abs(array) > FLOAT32_MAX if array.dtype.itemsize > 4 else None
    if big is not None and big.any():
        raise ValueError(
            f"{what} has {int(big.sum())} voxels beyond the float32 range (|value| > 3.4e38, e.g. "
            f"{float(array[big][0]):.3g}); such values are not intensities: fix or clip them"
        )
    if float(array.max()) == float(array.min()):
        raise ValueError(
            f"{what} is constant (all voxels {float(array.min())}); nothing to register"
        )


def normalize_intensity(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Map the ``lower``..``upper`` percentiles to 0..1 and clip; float32. Percentiles are taken on
    at most ~1M evenly strided voxels, so the result does not depend on random sampling."""
    flat = array.ravel()
    step = max(1, flat.size // 1_000_000)
    lo, hi = np.percentile(flat[::step].astype(np.float64), [lower, upper])
    if hi <= lo:
        lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, np.float32)
    return np.clip((array.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
