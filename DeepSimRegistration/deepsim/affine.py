"""Robust classical affine (or rigid) pre-alignment (SimpleITK), in LPS physical space.

1. Intensities are clipped at robust percentiles (0.5 %, 99.5 %) in float64 before anything else,
   so a single outlier voxel, or values beyond float32, cannot dominate the metric.
2. Both images are block-averaged to about ``spacing`` mm.
3. Starts: the identity, the geometric centres, the centres of mass (moments), and the moments
   start rotated by +-``angle`` about each axis; the start with the best Mattes mutual information
   is kept (a small multi-start over rotations; a rotated start must beat the others by 5 %).
4. Multi-resolution Mattes MI, regular-step gradient descent, over a ``shrink`` pyramid.
5. The result is kept only when its metric is no worse than the identity's and the start's; else
   the better of those is returned (so the pre-alignment never makes a pair worse by its metric).
"""

from __future__ import annotations

import logging

import numpy as np

from .geometry import Image, to_sitk

__all__ = ["affine_prealign", "robust_clip"]

log = logging.getLogger(__name__)


def robust_clip(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """``array`` clipped to its ``lower``..``upper`` percentiles (on at most ~1M strided voxels),
    computed in float64 and returned as float32."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    lo, hi = np.percentile(flat[:: max(1, flat.size // 1_000_000)], [lower, upper])
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    out = np.clip(np.asarray(array, dtype=np.float64), lo, hi) - lo
    return out.astype(np.float32)


def _coarse(image: Image, spacing: float):
    """Clipped float32 SimpleITK image block-averaged to about ``spacing`` mm, keeping at least
    32 voxels per axis (never upsampled)."""
    import SimpleITK as sitk

    img = to_sitk(Image(robust_clip(image.array), image.grid))
    img = sitk.Cast(img, sitk.sitkFloat32)
    factors = [
        max(1, min(int(round(spacing / s)), n // 32))
        for s, n in zip(img.GetSpacing(), img.GetSize())
    ]
    return sitk.BinShrink(img, factors) if max(factors) > 1 else img


def _to_matrix(transform, d: int) -> np.ndarray:
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        transform = transform.GetNthTransform(0)
    affine = sitk.AffineTransform(d)
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    affine.SetCenter(transform.GetCenter())
    a = np.asarray(affine.GetMatrix()).reshape(d, d)
    c = np.asarray(affine.GetCenter())
    t = np.asarray(affine.GetTranslation())
    out = np.eye(d + 1)
    out[:d, :d] = a
    out[:d, d] = t + c - a @ c
    return out


def _rotation(d: int, axis: int, angle: float) -> np.ndarray:
    if d == 2:
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    c, s = np.cos(angle), np.sin(angle)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _method(iterations: int, shrink: list[int]):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.2, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.6
    )
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([s / 2.0 for s in shrink])
    return reg


def _metric(f, m, transform) -> float:
    """Mattes MI of ``transform`` at full (coarse-image) resolution; +inf when no overlap."""

    reg = _method(0, [1])
    reg.SetInitialTransform(transform, inPlace=False)
    try:
        value = float(reg.MetricEvaluate(f, m))
    except RuntimeError:
        return float("inf")
    return value if np.isfinite(value) and value != 0.0 else float("inf")


def affine_prealign(
    fixed: Image,
    moving: Image,
    iterations: int = 100,
    shrink: tuple[int, ...] = (2, 1),
    spacing: float = 3.0,
    rigid: bool = False,
    angle: float = 15.0,
) -> np.ndarray:
    """Affine (``rigid``: rotation + translation) map of fixed points to moving points, a
    homogeneous LPS matrix (resampling convention). Deterministic for given inputs."""
    import SimpleITK as sitk

    f, m = _coarse(fixed, spacing), _coarse(moving, spacing)
    d = f.GetDimension()

    def make():
        if rigid:
            return sitk.Euler2DTransform() if d == 2 else sitk.Euler3DTransform()
        return sitk.AffineTransform(d)

    identity = make()
    starts = {"identity": identity}
    for name, mode in (
        ("centres", sitk.CenteredTransformInitializerFilter.GEOMETRY),
        ("moments", sitk.CenteredTransformInitializerFilter.MOMENTS),
    ):
        try:
            starts[name] = sitk.CenteredTransformInitializer(f, m, make(), mode)
        except RuntimeError:
            pass
    if "moments" in starts:
        base = _to_matrix(starts["moments"], d)
        centre = np.asarray(starts["moments"].GetCenter())
        for axis in range(1 if d == 2 else 3):
            for sign in (-1, 1):
                rot = _rotation(d, axis, np.deg2rad(sign * angle))
                t = sitk.AffineTransform(d)
                t.SetCenter(tuple(centre))
                t.SetMatrix(tuple((base[:d, :d] @ rot).ravel()))
                t.SetTranslation(tuple(base[:d, d] + base[:d, :d] @ centre - centre))
                if rigid:
                    e = make()
                    e.SetCenter(tuple(centre))
                    e.SetMatrix(t.GetMatrix())
                    e.SetTranslation(t.GetTranslation())
                    t = e
                starts[f"moments_rot{axis}{'+' if sign > 0 else '-'}"] = t
    scores = {name: _metric(f, m, t) for name, t in starts.items()}
    best_start = min(scores, key=scores.get)
    plain = min(("moments", "centres", "identity"), key=lambda k: scores.get(k, float("inf")))
    if best_start.startswith("moments_rot") and scores[best_start] > scores[plain] - 0.05 * abs(
        scores[plain]
    ):
        # Mattes MI drops samples that leave the moving image and can favour a rotated partial
        # overlap slightly: a rotated start must win clearly
        best_start = plain
    if not np.isfinite(scores[best_start]):
        log.warning("affine pre-alignment: no start overlaps; keeping the identity")
        return np.eye(d + 1)
    levels = [s for s in shrink if min(f.GetSize()) / s >= 24] or [1]
    reg = _method(iterations, levels)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(starts[best_start], inPlace=False)
    try:
        result = reg.Execute(f, m)
        final = _metric(f, m, result)
    except RuntimeError as err:
        log.warning("affine pre-alignment failed (%s); keeping the %s start", err, best_start)
        result, final = starts[best_start], scores[best_start]
    if final > min(scores["identity"], scores[best_start]):
        keep = "identity" if scores["identity"] <= scores[best_start] else best_start
        log.warning("affine pre-alignment did not improve the metric; keeping the %s start", keep)
        result = starts[keep]
    log.info("affine pre-alignment from %s: metric %s -> %s", best_start, scores, final)
    return _to_matrix(result, d)
