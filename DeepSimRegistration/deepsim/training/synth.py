"""SynthMorph-style synthetic registration pairs in torch, 2D and 3D from one code path.

Every pair has exact label maps and an exact ground-truth displacement, so it can be used for
training (unlimited data, no licence questions) and for measuring registration error. The recipe
follows Hoffmann et al., "SynthMorph: learning contrast-invariant registration without acquired
images", IEEE TMI 2022:

1. a label map: the argmax of ``K`` smooth Gaussian noise fields (:func:`random_label_map`), or a
   real label map (e.g. a FreeSurfer ``aseg``) under a random deformation;
2. a smooth diffeomorphic deformation: a random stationary velocity field integrated by scaling
   and squaring (:func:`random_deformation`);
3. intensities from labels: per-label random means and spreads, blur, a smooth multiplicative bias
   field, gamma and noise, normalised to ``[0, 1]`` (:func:`random_appearance`); or a real image
   with intensity augmentation (:func:`augment_intensity`).

Conventions are those of :mod:`deepsim.warp`: images ``(B, C, *spatial)``, displacements
``(B, D, *spatial)`` in voxels with channel ``i`` along tensor axis ``i``, and
``warp(m, u)(x) = m(x + u(x))``. All randomness comes from one ``torch.Generator``; the tensors are
made on the generator's device (CPU or CUDA), so a seed reproduces a pair on the same device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..warp import compose, integrate_velocity, interp_mode, resize_displacement, warp

__all__ = [
    "SynthConfig",
    "SyntheticPairs",
    "augment_intensity",
    "boundary_bands",
    "gaussian_blur",
    "microscopy_pair",
    "random_nuclei",
    "random_appearance",
    "random_deformation",
    "random_label_map",
    "smooth_noise",
    "synth_pair",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or any(n < 2 for n in shape):
        raise ValueError(f"{name}(): shape must be 2 or 3 sizes >= 2, got {shape}")
    return shape


def _check_range(name: str, arg: str, value: Sequence[float], low: float = -math.inf) -> None:
    if len(value) != 2 or not (low <= value[0] <= value[1]):
        raise ValueError(f"{name}: {arg} must be (lo, hi) with {low} <= lo <= hi, got {value}")


def _uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()):
    """Uniform samples in ``[low, high)`` on the generator's device (float32)."""
    u = torch.rand(tuple(size), generator=generator, device=generator.device)
    return low + (high - low) * u


def _as_image(name: str, arg: str, x: torch.Tensor, shape: tuple[int, ...] | None = None):
    """Accept ``(*spatial)``, ``(C, *spatial)`` or ``(1, C, *spatial)`` as ``(1, C, *spatial)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}(): {arg} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        d = len(shape)
        if x.ndim == d:
            x = x[None, None]
        elif x.ndim == d + 1:
            x = x[None]
        if x.ndim != d + 2 or x.shape[0] != 1 or tuple(x.shape[2:]) != shape:
            raise ValueError(
                f"{name}(): {arg} must be (1, C, {', '.join(map(str, shape))}), "
                f"got {tuple(x.shape)}"
            )
    elif x.ndim not in (4, 5):
        raise ValueError(
            f"{name}(): {arg} must be (B, C, *spatial) in 2D or 3D, got {tuple(x.shape)}"
        )
    return x


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Rescale each ``(b, c)`` image to ``[0, 1]`` (a constant image becomes 0)."""
    flat = x.flatten(2)
    lo = flat.amin(-1).view(*x.shape[:2], *([1] * (x.ndim - 2)))
    hi = flat.amax(-1).view_as(lo)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def gaussian_blur(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur with edge replication.

    Args:
        x: ``(B, C, *spatial)`` float image, 2D or 3D.
        sigma: standard deviation in voxels, one value or one per spatial axis; axes with
            ``sigma < 0.2`` are left alone.

    Returns:
        ``(B, C, *spatial)`` blurred image.
    """
    spatial_dims = x.ndim - 2
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"gaussian_blur(): x must be (B, C, *spatial), got {tuple(x.shape)}")
    sigmas = [float(sigma)] * spatial_dims if isinstance(sigma, (int, float)) else list(sigma)
    if len(sigmas) != spatial_dims or any(s < 0 for s in sigmas):
        raise ValueError(
            f"gaussian_blur(): sigma must be >= 0, one value or {spatial_dims}, got {sigma}"
        )
    conv = getattr(F, f"conv{spatial_dims}d")
    channels = x.shape[1]
    for axis, s in enumerate(sigmas):
        if s < 0.2:
            continue
        radius = max(1, math.ceil(3.0 * s))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / s) ** 2)
        kernel = kernel / kernel.sum()
        kshape = [1] * spatial_dims
        kshape[axis] = kernel.numel()
        weight = kernel.view(1, 1, *kshape).expand(channels, 1, *kshape)
        pad = [0] * (2 * spatial_dims)
        pos = 2 * (spatial_dims - 1 - axis)  # F.pad lists the last axis first
        pad[pos] = pad[pos + 1] = radius
        x = conv(F.pad(x, pad, mode="replicate"), weight, groups=channels)
    return x


def smooth_noise(
    shape: Sequence[int],
    channels: int,
    length: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Smooth Gaussian random field with correlation length about ``length`` voxels.

    White noise is drawn on a grid ``length / 4`` voxels apart, blurred there and linearly
    upsampled, so the cost is one upsampling of ``channels`` images.

    Args:
        shape: spatial shape, 2 or 3 sizes.
        channels: number of independent fields.
        length: correlation length in voxels (about the size of one blob).
        generator: source of randomness; the field is made on its device.

    Returns:
        ``(1, channels, *shape)`` float32 stationary field, each channel with zero mean and unit
        variance at the coarse grid points (a little less in between, from linear upsampling).
    """
    shape = _check_shape("smooth_noise", shape)
    if length <= 0:
        raise ValueError(f"smooth_noise(): length must be > 0, got {length}")
    step = max(1.0, length / 4.0)
    sigma = length / step / 2.0
    radius = max(1, math.ceil(3.0 * sigma))
    coarse = tuple(max(2, math.ceil((n - 1) / step) + 1) for n in shape)
    # draw a margin of one kernel radius and crop it after blurring, so that no padding makes
    # the field's variance larger at the border (the field stays stationary)
    margin = tuple(n + 2 * radius for n in coarse)
    noise = torch.randn((1, channels, *margin), generator=generator, device=generator.device)
    crop = (slice(None), slice(None), *[slice(radius, radius + n) for n in coarse])
    noise = gaussian_blur(noise, sigma)[crop]
    # unit variance: blurred white noise has variance sum(k^2) per axis
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    noise = noise / float(kernel.square().sum() ** (len(shape) / 2.0))
    if coarse == shape:
        return noise
    return F.interpolate(noise, size=shape, mode=interp_mode(len(shape)), align_corners=True)


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------


def random_label_map(
    shape: Sequence[int],
    n_labels: int,
    generator: torch.Generator,
    smoothness: float = 16.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random label map: the argmax of ``n_labels`` smooth Gaussian noise fields.

    Args:
        shape: spatial shape, 2 or 3 sizes.
        n_labels: number of labels ``K >= 2``; the values are ``0 .. K - 1`` (most, not always
            all, of them occur).
        generator: source of randomness.
        smoothness: correlation length of the noise in voxels; regions are about this size.
        device: must be the generator's device (the default).

    Returns:
        ``(1, 1, *shape)`` int64 label map.
    """
    shape = _check_shape("random_label_map", shape)
    if n_labels < 2:
        raise ValueError(f"random_label_map(): n_labels must be >= 2, got {n_labels}")
    if device is not None and torch.device(device).type != generator.device.type:
        raise ValueError(
            f"random_label_map(): device {device} must match the generator's {generator.device}"
        )
    fields = smooth_noise(shape, n_labels, smoothness, generator)
    return fields.argmax(dim=1, keepdim=True)


def random_nuclei(
    shape: Sequence[int],
    generator: torch.Generator,
    count_range: tuple[float, float] = (5.0, 80.0),
    radius_range: tuple[float, float] = (2.0, 8.0),
    roughness: float = 0.3,
) -> torch.Tensor:
    """Random instance map of nuclei-like blobs (fluorescence microscopy shapes).

    A count drawn from ``count_range`` of axis-aligned ellipsoids, centres uniform over the
    field, radii log-uniform in ``radius_range`` with a per-axis aspect in ``[0.7, 1.3]``, their
    outlines made irregular by smooth noise of strength ``roughness``. Later blobs lie over
    earlier ones, so touching and overlapping nuclei occur as density rises.

    Returns:
        ``(1, 1, *shape)`` int64 map: 0 background, ``1..N`` one id per visible blob.
    """
    shape = _check_shape("random_nuclei", shape)
    _check_range("random_nuclei()", "count_range", count_range, 1.0)
    _check_range("random_nuclei()", "radius_range", radius_range, 0.5)
    device = generator.device
    n = int(round(float(_uniform(generator, *count_range))))
    d = len(shape)
    sizes = torch.tensor(shape, dtype=torch.float32, device=device)
    centres = _uniform(generator, 0.0, 1.0, (n, d)) * (sizes - 1)
    log_r = _uniform(generator, math.log(radius_range[0]), math.log(radius_range[1]), (n, 1))
    radii = log_r.exp() * _uniform(generator, 0.7, 1.3, (n, d))
    axes = torch.meshgrid(
        *[torch.arange(s, dtype=torch.float32, device=device) for s in shape], indexing="ij"
    )
    coords = torch.stack(axes)  # (d, *shape)
    view = (n, d) + (1,) * d
    dist = (((coords[None] - centres.view(view)) / radii.view(view)) ** 2).sum(1)  # (n, *shape)
    bumps = roughness * smooth_noise(shape, 1, float(sum(radius_range)) / 2.0, generator)[0]
    inside = (dist + bumps) < 1.0
    ids = torch.arange(1, n + 1, device=device).view(n, *([1] * d))
    return (inside * ids).amax(0)[None, None].long()


def random_deformation(
    shape: Sequence[int],
    max_disp: float,
    generator: torch.Generator,
    smoothness: float = 24.0,
    steps: int = 7,
) -> torch.Tensor:
    """Random smooth diffeomorphic displacement from a stationary velocity field.

    The velocity is a smooth Gaussian random field scaled so that its largest vector is
    ``max_disp`` voxels; it is integrated by scaling and squaring
    (:func:`deepsim.warp.integrate_velocity`) on a grid of half the resolution and resampled to
    ``shape``. For smooth fields the peak displacement is close to ``max_disp``.

    Args:
        shape: spatial shape, 2 or 3 sizes.
        max_disp: peak velocity magnitude in voxels of ``shape`` (``>= 0``).
        generator: source of randomness.
        smoothness: correlation length of the velocity in voxels.
        steps: scaling and squaring steps.

    Returns:
        ``(1, D, *shape)`` float32 displacement in voxels, channel ``i`` along tensor axis ``i``.
    """
    shape = _check_shape("random_deformation", shape)
    if max_disp < 0:
        raise ValueError(f"random_deformation(): max_disp must be >= 0, got {max_disp}")
    spatial_dims = len(shape)
    half = tuple(max(2, (n + 1) // 2) for n in shape)
    velocity = smooth_noise(half, spatial_dims, max(smoothness / 2.0, 1.0), generator)
    peak = velocity.norm(dim=1).amax().clamp_min(1e-8)
    # velocity in voxels of the full grid, then in voxels of the half grid for integration
    to_half = torch.tensor(
        [(m - 1) / (n - 1) for m, n in zip(half, shape, strict=True)], device=velocity.device
    ).view(1, spatial_dims, *([1] * spatial_dims))
    velocity = velocity * (max_disp / peak) * to_half
    disp = integrate_velocity(velocity, steps)
    return resize_displacement(disp, shape)


def random_appearance(
    labels: torch.Tensor,
    generator: torch.Generator,
    mean_range: tuple[float, float] = (0.0, 1.0),
    std_range: tuple[float, float] = (0.0, 0.08),
    blur_range: tuple[float, float] = (0.0, 1.0),
    bias_strength: float = 0.3,
    bias_smoothness: float = 48.0,
    gamma_std: float = 0.25,
    noise_range: tuple[float, float] = (0.0, 0.05),
    means: torch.Tensor | None = None,
    stds: torch.Tensor | None = None,
    zero_background: bool = False,
) -> torch.Tensor:
    """Random image from a label map (SynthMorph intensity model).

    Each label gets a random mean and spread; the image is blurred, multiplied by a smooth bias
    field ``exp(bias_strength * noise)``, rescaled to ``[0, 1]``, raised to a random gamma
    ``exp(gamma_std * N(0, 1))``, given Gaussian noise and clipped to ``[0, 1]``.

    Args:
        labels: ``(1, 1, *spatial)`` non-negative int label map (2D or 3D).
        generator: source of randomness; on the labels' device.
        mean_range: range of the per-label mean intensity.
        std_range: range of the per-label intensity spread (std of white noise in the label).
        blur_range: range of the Gaussian blur sigma in voxels.
        bias_strength: std of the log bias field (0 disables it).
        bias_smoothness: correlation length of the bias field in voxels.
        gamma_std: std of the log gamma (0 disables it).
        noise_range: range of the std of the final additive noise.
        means: optional ``(K,)`` per-label means to use instead of sampling (to share a contrast
            between the two images of a pair); ``K > labels.max()``.
        stds: optional ``(K,)`` per-label spreads, as ``means``.
        zero_background: give label 0 mean 0 and no spread (skull-stripped look).

    Returns:
        ``(1, 1, *spatial)`` float32 image in ``[0, 1]``.
    """
    labels = _as_image("random_appearance", "labels", labels)
    if labels.shape[:2] != (1, 1) or labels.is_floating_point():
        raise ValueError(
            f"random_appearance(): labels must be an int (1, 1, *spatial) map, got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    for arg, value in (("mean_range", mean_range), ("std_range", std_range)):
        _check_range("random_appearance()", arg, value)
    _check_range("random_appearance()", "blur_range", blur_range, 0.0)
    _check_range("random_appearance()", "noise_range", noise_range, 0.0)
    shape = tuple(labels.shape[2:])
    n = int(labels.max()) + 1
    if means is None:
        means = _uniform(generator, *mean_range, (n,))
    if stds is None:
        stds = _uniform(generator, *std_range, (n,))
    if means.numel() < n or stds.numel() < n:
        raise ValueError(
            f"random_appearance(): means and stds need >= {n} entries, got {means.numel()} and "
            f"{stds.numel()}"
        )
    if zero_background:
        means, stds = means.clone(), stds.clone()
        means[0] = 0.0
        stds[0] = 0.0
    image = means[labels] + stds[labels] * torch.randn(
        labels.shape, generator=generator, device=generator.device
    )
    image = gaussian_blur(image, float(_uniform(generator, *blur_range)))
    if bias_strength > 0:
        image = image * torch.exp(
            bias_strength * smooth_noise(shape, 1, bias_smoothness, generator)
        )
    image = _minmax(image)
    if gamma_std > 0:
        gamma = torch.exp(gamma_std * torch.randn((), generator=generator, device=generator.device))
        image = image.clamp_min(0.0) ** gamma
    noise_std = float(_uniform(generator, *noise_range))
    if noise_std > 0:
        image = image + noise_std * torch.randn(
            image.shape, generator=generator, device=generator.device
        )
    return image.clamp(0.0, 1.0)


def augment_intensity(
    image: torch.Tensor,
    generator: torch.Generator,
    bias_strength: float = 0.3,
    bias_smoothness: float = 48.0,
    gamma_std: float = 0.25,
    noise_range: tuple[float, float] = (0.0, 0.05),
    contrast_range: tuple[float, float] = (0.75, 1.25),
) -> torch.Tensor:
    """Intensity augmentation of a real image: bias field, contrast, gamma and noise.

    The image is rescaled to ``[0, 1]``, multiplied by ``exp(bias_strength * noise)``, rescaled,
    stretched around its mean by a random contrast factor, raised to
    ``exp(gamma_std * N(0, 1))``, given Gaussian noise and clipped to ``[0, 1]``. Zero (background)
    voxels stay near zero because the bias is multiplicative.

    Args:
        image: ``(B, C, *spatial)`` float image, 2D or 3D (any intensity range).
        generator: source of randomness; on the image's device. One draw per call, shared by
            the whole batch.
        bias_strength: std of the log bias field (0 disables it).
        bias_smoothness: correlation length of the bias field in voxels.
        gamma_std: std of the log gamma (0 disables it).
        noise_range: range of the std of the additive noise.
        contrast_range: range of the contrast factor around the image mean.

    Returns:
        ``(B, C, *spatial)`` float32 image in ``[0, 1]``.
    """
    image = _as_image("augment_intensity", "image", image)
    _check_range("augment_intensity()", "noise_range", noise_range, 0.0)
    _check_range("augment_intensity()", "contrast_range", contrast_range, 0.0)
    image = _minmax(image.float())
    shape = tuple(image.shape[2:])
    if bias_strength > 0:
        bias = torch.exp(bias_strength * smooth_noise(shape, 1, bias_smoothness, generator))
        image = _minmax(image * bias)
    contrast = float(_uniform(generator, *contrast_range))
    mean = image.flatten(2).mean(-1).view(*image.shape[:2], *([1] * len(shape)))
    image = ((image - mean) * contrast + mean).clamp(0.0, 1.0)
    if gamma_std > 0:
        gamma = torch.exp(gamma_std * torch.randn((), generator=generator, device=generator.device))
        image = image**gamma
    noise_std = float(_uniform(generator, *noise_range))
    if noise_std > 0:
        image = image + noise_std * torch.randn(
            image.shape, generator=generator, device=generator.device
        )
    return image.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    """All knobs of the synthetic pair generator; round-trips through JSON.

    Lengths and displacements are in voxels of the generated grid.

    Attributes:
        n_labels: labels of a random label map.
        label_smoothness: region size of random label maps.
        max_disp: peak displacement of the ground-truth deformation.
        min_disp_frac: the peak is drawn uniformly in ``[min_disp_frac, 1] * max_disp``.
        disp_smoothness: correlation length of the deformation's velocity.
        integration_steps: scaling and squaring steps.
        seed_max_disp: peak of the extra random deformation applied to a seed label map (and
            seed image) so that pairs from one seed differ.
        mean_range, std_range, blur_range, noise_range: intensity model of
            :func:`random_appearance` (noise also for real images).
        bias_strength, bias_smoothness, gamma_std: bias field and gamma for both intensity
            models.
        contrast_range: contrast factor of :func:`augment_intensity` for real images.
        shared_contrast: the fixed and moving images share per-label means and spreads
            (mono-modal pairs); ``False`` draws them independently (SynthMorph's
            contrast-invariant setting).
        zero_background_prob: probability that label 0 of a seed label map is black in a pair
            (random label maps have no background and ignore this).
        real_image_prob: probability of using the seed image (with :func:`augment_intensity`)
            instead of random intensities when a seed image is given.
        seed_prob: in :class:`SyntheticPairs` with seeds, probability of using a seed instead
            of a random label map.
        microscopy_prob: probability that a pair without a seed is fluorescence-microscopy-like
            (:func:`microscopy_pair`) instead of a random label map.
        nuclei_count_range, nuclei_radius_range: nuclei per image and their radii in voxels
            (:func:`random_nuclei`).
        photon_range: peak photon counts of the shot (Poisson) noise of microscopy pairs.
        illumination_strength: peak relative change of the linear illumination gradient.
    """

    n_labels: int = 16
    label_smoothness: float = 16.0
    max_disp: float = 6.0
    min_disp_frac: float = 0.5
    disp_smoothness: float = 24.0
    integration_steps: int = 7
    seed_max_disp: float = 4.0
    mean_range: tuple[float, float] = (0.0, 1.0)
    std_range: tuple[float, float] = (0.0, 0.08)
    blur_range: tuple[float, float] = (0.0, 1.0)
    bias_strength: float = 0.3
    bias_smoothness: float = 48.0
    gamma_std: float = 0.25
    noise_range: tuple[float, float] = (0.0, 0.05)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    shared_contrast: bool = True
    zero_background_prob: float = 0.5
    real_image_prob: float = 0.5
    seed_prob: float = 0.5
    microscopy_prob: float = 0.0
    nuclei_count_range: tuple[float, float] = (5.0, 80.0)
    nuclei_radius_range: tuple[float, float] = (2.0, 8.0)
    photon_range: tuple[float, float] = (20.0, 1000.0)
    illumination_strength: float = 0.4

    def __post_init__(self) -> None:
        ranges = ("mean_range", "std_range", "blur_range", "noise_range", "contrast_range")
        ranges += ("nuclei_count_range", "nuclei_radius_range", "photon_range")
        for name in ranges:
            value = tuple(float(v) for v in getattr(self, name))
            _check_range("SynthConfig", name, value, -math.inf if name == "mean_range" else 0.0)
            setattr(self, name, value)
        if self.n_labels < 2:
            raise ValueError(f"SynthConfig: n_labels must be >= 2, got {self.n_labels}")
        for name in ("label_smoothness", "disp_smoothness", "bias_smoothness"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SynthConfig: {name} must be > 0, got {getattr(self, name)}")
        for name in ("max_disp", "seed_max_disp", "bias_strength", "gamma_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"SynthConfig: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.illumination_strength < 1.0:
            raise ValueError(
                f"SynthConfig: illumination_strength must be in [0, 1), got "
                f"{self.illumination_strength}"
            )
        probs = ("min_disp_frac", "zero_background_prob", "real_image_prob", "seed_prob")
        for name in probs + ("microscopy_prob",):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"SynthConfig: {name} must be in [0, 1], got {getattr(self, name)}"
                )
        if self.integration_steps < 0:
            raise ValueError(
                f"SynthConfig: integration_steps must be >= 0, got {self.integration_steps}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"SynthConfig.from_dict(): unknown keys {unknown}; valid keys are {sorted(names)}"
            )
        return cls(**data)


def synth_pair(
    shape: Sequence[int],
    generator: torch.Generator,
    config: SynthConfig | None = None,
    seed_labels: torch.Tensor | None = None,
    seed_image: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One synthetic registration pair with exact labels and ground-truth displacement.

    Direction (the resampling convention of :func:`deepsim.warp.warp`): ``disp`` lives on the
    fixed grid and maps each fixed voxel ``x`` to its moving position ``x + disp(x)``, so

    - ``warp(moving, disp) ≈ fixed`` (up to interpolation and the independent noise, bias and
      blur drawn for each image), and
    - ``warp(moving_labels.float(), disp, mode="nearest").long() == fixed_labels`` exactly.

    Construction: a base label map ``L`` (random, or ``seed_labels`` warped by a random
    deformation ``a``: ``moving_labels = warp(L, a, "nearest")``) and a second random deformation
    ``u``, the returned ``disp``; ``fixed_labels = warp(moving_labels, u, "nearest")``. Images
    are drawn from their own label maps, or, for ``seed_image``, resampled once from it:
    ``moving = aug(warp(I, a))`` and ``fixed = aug(warp(I, compose(a, u)))``, the map
    ``x -> x + u(x) + a(x + u(x))``. So neither image is an interpolated copy of the other.

    Args:
        shape: spatial shape, 2 or 3 sizes.
        generator: source of randomness; outputs are on its device.
        config: generator settings (defaults of :class:`SynthConfig` when None).
        seed_labels: optional real label map ``(*shape)``, ``(1, *shape)`` or ``(1, 1, *shape)``
            with non-negative int labels (e.g. a FreeSurfer aseg), used instead of a random map.
        seed_image: optional real image of the same shape, matching ``seed_labels``; used with
            probability ``config.real_image_prob`` (augmented by :func:`augment_intensity`)
            instead of random per-label intensities. Needs ``seed_labels``.

    Returns:
        Dict with ``fixed`` and ``moving`` ``(1, 1, *shape)`` float32 in ``[0, 1]``,
        ``fixed_labels`` and ``moving_labels`` ``(1, 1, *shape)`` int64, and ``disp``
        ``(1, D, *shape)`` float32 displacement in voxels (channel ``i`` along tensor axis ``i``).
    """
    cfg = config if config is not None else SynthConfig()
    shape = _check_shape("synth_pair", shape)
    device = generator.device
    if seed_image is not None and seed_labels is None:
        raise ValueError("synth_pair(): seed_image needs seed_labels (the labels of that image)")

    amplitude = cfg.max_disp * float(_uniform(generator, cfg.min_disp_frac, 1.0))
    disp = random_deformation(
        shape, amplitude, generator, cfg.disp_smoothness, cfg.integration_steps
    )
    if (
        seed_labels is None
        and cfg.microscopy_prob > 0  # no extra draw otherwise: existing pairs stay the same
        and float(_uniform(generator, 0.0, 1.0)) < cfg.microscopy_prob
    ):
        return microscopy_pair(shape, generator, cfg, disp)
    if seed_labels is None:
        base = random_label_map(shape, cfg.n_labels, generator, cfg.label_smoothness)
        moving_labels = base
        to_fixed = disp
        pre = None
    else:
        base = _as_image("synth_pair", "seed_labels", seed_labels, shape).to(device)
        if base.shape[1] != 1 or base.is_floating_point() or int(base.min()) < 0:
            raise ValueError(
                f"synth_pair(): seed_labels must be non-negative int (1, 1, *shape), got "
                f"{base.dtype} {tuple(base.shape)}"
            )
        pre = random_deformation(
            shape, cfg.seed_max_disp, generator, cfg.disp_smoothness, cfg.integration_steps
        )
        moving_labels = _warp_labels(base, pre)
        to_fixed = compose(pre, disp)  # x -> x + disp(x) + pre(x + disp(x))
    # labels: exactly the ground truth's resampling of the moving labels (Dice 1 under ``disp``)
    fixed_labels = _warp_labels(moving_labels, disp)

    use_real = seed_image is not None and float(_uniform(generator, 0.0, 1.0)) < cfg.real_image_prob
    if use_real:
        real = _as_image("synth_pair", "seed_image", seed_image, shape).to(device).float()
        real = _minmax(real[:, :1])
        images = []
        for to_image in (pre, to_fixed):
            resampled = real if to_image is None else warp(real, to_image)
            images.append(
                augment_intensity(
                    resampled,
                    generator,
                    cfg.bias_strength,
                    cfg.bias_smoothness,
                    cfg.gamma_std,
                    cfg.noise_range,
                    cfg.contrast_range,
                )
            )
        moving, fixed = images
    else:
        n = int(torch.maximum(moving_labels.max(), fixed_labels.max())) + 1
        zero_bg = (
            seed_labels is not None
            and float(_uniform(generator, 0.0, 1.0)) < cfg.zero_background_prob
        )
        shared = (
            (_uniform(generator, *cfg.mean_range, (n,)), _uniform(generator, *cfg.std_range, (n,)))
            if cfg.shared_contrast
            else (None, None)
        )
        images = []
        for labels in (moving_labels, fixed_labels):
            images.append(
                random_appearance(
                    labels,
                    generator,
                    cfg.mean_range,
                    cfg.std_range,
                    cfg.blur_range,
                    cfg.bias_strength,
                    cfg.bias_smoothness,
                    cfg.gamma_std,
                    cfg.noise_range,
                    means=shared[0],
                    stds=shared[1],
                    zero_background=zero_bg,
                )
            )
        moving, fixed = images
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": fixed_labels,
        "moving_labels": moving_labels,
        "disp": disp,
    }


def microscopy_pair(
    shape: Sequence[int],
    generator: torch.Generator,
    config: SynthConfig,
    disp: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """A fluorescence-microscopy-like pair: one specimen imaged twice under the motion ``disp``.

    The specimen is a :func:`random_nuclei` instance map with a dim background and a random
    brightness per nucleus, chromatin-like texture and an optical blur. The fixed frame sees it
    moved by ``disp`` (``fixed = warp(specimen, disp)``); each frame then gets its own
    illumination (a linear gradient times a smooth bias field) and its own shot (Poisson) and
    read noise, and is rescaled to ``[0, 1]``. Labels are the nuclei masks (0 background,
    1 nucleus), warped exactly as in :func:`synth_pair`.
    """
    shape = _check_shape("microscopy_pair", shape)
    d = len(shape)
    instances = random_nuclei(
        shape, generator, config.nuclei_count_range, config.nuclei_radius_range
    )
    n = int(instances.max()) + 1
    brightness = _uniform(generator, 0.3, 1.0, (n,))
    brightness[0] = _uniform(generator, 0.0, 0.15)
    specimen = brightness[instances]
    texture = float(_uniform(generator, 0.0, 0.5))
    grain = smooth_noise(shape, 1, float(_uniform(generator, 1.5, 4.0)), generator)
    specimen = specimen * (1.0 + texture * grain).clamp_min(0.0)
    specimen = gaussian_blur(specimen, float(_uniform(generator, 0.5, 1.5)))
    moving_labels = (instances > 0).long()
    frames = []
    for clean in (specimen, warp(specimen, disp)):
        direction = torch.randn(d, generator=generator, device=generator.device)
        direction = direction / direction.norm().clamp_min(1e-8)
        axes = torch.meshgrid(
            *[torch.linspace(-1.0, 1.0, s, device=generator.device) for s in shape],
            indexing="ij",
        )
        ramp = sum(w * a for w, a in zip(direction, axes))
        light = 1.0 + config.illumination_strength * float(_uniform(generator, 0.0, 1.0)) * ramp
        if config.bias_strength > 0:
            bias = smooth_noise(shape, 1, config.bias_smoothness, generator)
            light = light * torch.exp(config.bias_strength * bias)
        photons = math.exp(float(_uniform(generator, *map(math.log, config.photon_range))))
        signal = (clean * light).clamp_min(0.0) * photons
        image = torch.poisson(signal, generator=generator) / photons
        read = float(_uniform(generator, *config.noise_range))
        image = image + read * torch.randn(image.shape, generator=generator, device=image.device)
        frames.append(_minmax(image).float())
    moving, fixed = frames
    return {
        "fixed": fixed,
        "moving": moving,
        "fixed_labels": _warp_labels(moving_labels, disp),
        "moving_labels": moving_labels,
        "disp": disp,
    }


def boundary_bands(labels: torch.Tensor) -> torch.Tensor:
    """Distance bands to the boundaries of a label map: a segmentation target that depends on
    the geometry of the regions only, not on which id (or intensity) each region has.

    A voxel is on a boundary when one of its 3^D neighbours has another label. Classes: 1 on a
    boundary, 2 one voxel off it, 3 two or three voxels off it, 0 farther (Chebyshev distance).

    Args:
        labels: ``(B, 1, *spatial)`` int label map, 2D or 3D.

    Returns:
        ``(B, 1, *spatial)`` int64 classes ``0..3``.
    """
    if labels.ndim not in (4, 5) or labels.shape[1] != 1 or labels.is_floating_point():
        raise ValueError(
            f"boundary_bands(): labels must be an int (B, 1, *spatial) map in 2D or 3D, got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    pool = F.max_pool2d if labels.ndim == 4 else F.max_pool3d
    x = labels.float()
    edge = (pool(x, 3, 1, 1) != x) | (pool(-x, 3, 1, 1) != -x)
    e = edge.float()
    near, within3 = pool(e, 3, 1, 1) > 0, pool(e, 7, 1, 3) > 0
    out = torch.zeros_like(labels, dtype=torch.long)
    out[within3] = 3
    out[near] = 2
    out[edge] = 1
    return out


def _warp_labels(labels: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling of an int label map ``(1, 1, *spatial)``."""
    return warp(labels.float(), disp, mode="nearest").round().long()


class SyntheticPairs:
    """On-the-fly source of synthetic pairs, reproducible by index.

    ``pair(index)`` seeds a fresh generator with ``seed + index``, so item ``i`` is the same pair
    on every call, epoch and worker (on the same device); ``sample(generator)`` draws from a
    caller's generator. With ``seeds``, each pair uses a randomly chosen seed label map (and its
    image, if given) with probability ``config.seed_prob``, otherwise a random label map.

    Example::

        pairs = SyntheticPairs((160, 192), SynthConfig(max_disp=5.0), seed=0)
        batch = pairs.pair(3)  # dict of fixed, moving, fixed_labels, moving_labels, disp

    Args:
        shape: spatial shape, 2 or 3 sizes.
        config: generator settings (defaults when None).
        seed: base seed of :meth:`pair`.
        seeds: optional sequence of seed label maps, each a tensor of ``shape`` (int labels) or
            a ``(labels, image)`` tuple (image may be None).
        device: device of the generator used by :meth:`pair` (``cpu`` by default).
    """

    def __init__(
        self,
        shape: Sequence[int],
        config: SynthConfig | None = None,
        seed: int = 0,
        seeds: Sequence[torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.shape = _check_shape("SyntheticPairs", shape)
        self.config = config if config is not None else SynthConfig()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.seeds: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for k, item in enumerate(seeds or ()):
            labels, image = item if isinstance(item, (tuple, list)) else (item, None)
            labels = _as_image("SyntheticPairs", f"seeds[{k}] labels", labels, self.shape)
            if image is not None:
                image = _as_image("SyntheticPairs", f"seeds[{k}] image", image, self.shape)
            self.seeds.append((labels.long(), image))
        logger.debug("SyntheticPairs %s with %d seeds", self.shape, len(self.seeds))

    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw one pair (see :func:`synth_pair`) from ``generator``."""
        labels = image = None
        if self.seeds and float(_uniform(generator, 0.0, 1.0)) < self.config.seed_prob:
            k = int(
                torch.randint(len(self.seeds), (), generator=generator, device=generator.device)
            )
            labels, image = self.seeds[k]
        return synth_pair(self.shape, generator, self.config, labels, image)

    def pair(self, index: int) -> dict[str, torch.Tensor]:
        """The deterministic pair number ``index`` (generator seeded with ``seed + index``)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed + int(index))
        return self.sample(generator)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.pair(index)

    def __repr__(self) -> str:
        return (
            f"SyntheticPairs(shape={self.shape}, seed={self.seed}, seeds={len(self.seeds)}, "
            f"config={self.config})"
        )
