"""Quality measures: Dice, folding, smoothness and HD95."""

from __future__ import annotations

import numpy as np

__all__ = ["dice_per_label", "mean_foreground_dice", "folding_percent", "std_log_jacobian", "hd95"]


def dice_per_label(a: np.ndarray, b: np.ndarray, labels=None) -> dict[int, float]:
    """Dice ``2|A and B| / (|A| + |B|)`` for each foreground label present in ``a`` or ``b``.

    Labels absent from both images are skipped (not scored 0); background 0 is never scored.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"dice_per_label(): shapes differ: {a.shape} vs {b.shape}")
    if labels is None:
        labels = np.union1d(np.unique(a), np.unique(b))
    out = {}
    for lab in labels:
        lab = int(lab)
        if lab == 0:
            continue
        in_a, in_b = a == lab, b == lab
        size = int(in_a.sum()) + int(in_b.sum())
        if size == 0:
            continue
        out[lab] = float(2.0 * np.logical_and(in_a, in_b).sum() / size)
    return out


def mean_foreground_dice(a: np.ndarray, b: np.ndarray, labels=None) -> float:
    """Unweighted mean of :func:`dice_per_label`; NaN when neither image has a foreground label."""
    scores = dice_per_label(a, b, labels)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def folding_percent(jac: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Percentage of voxels with ``det J <= 0``."""
    jac = np.asarray(jac)
    values = jac[mask.astype(bool)] if mask is not None else jac
    return float(100.0 * np.count_nonzero(values <= 0) / max(values.size, 1))


def std_log_jacobian(jac: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of ``log(det J)`` over voxels with ``det J > 0`` (the paper's smoothness)."""
    jac = np.asarray(jac)
    values = jac[mask.astype(bool)] if mask is not None else jac.ravel()
    values = values[values > 0]
    return float(np.std(np.log(values))) if values.size else float("nan")


def hd95(a: np.ndarray, b: np.ndarray, label: int, spacing=None) -> float:
    """95th percentile of the symmetric surface distance of one label (needs scipy); in the units
    of ``spacing`` (tensor order), voxels by default. NaN when the label is missing in either."""
    from scipy import ndimage

    ma, mb = np.asarray(a) == label, np.asarray(b) == label
    if not ma.any() or not mb.any():
        return float("nan")
    spacing = np.ones(ma.ndim) if spacing is None else np.asarray(spacing, float)

    def surface(m):
        return m & ~ndimage.binary_erosion(m)

    sa, sb = surface(ma), surface(mb)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(np.percentile(np.concatenate([da, db]), 95))
