"""Registration of one image pair in physical space: the data flow shared by the CLI and Slicer.

fixed, moving (any grids) -> optional affine pre-alignment A (LPS, fixed point -> moving point)
-> both resampled onto the model grid (fixed's field of view at the model's spacing) -> network
displacement ``u`` (model voxels) -> optional instance optimisation -> the complete mapping
``T(x) = A(x + U(x))`` with ``U`` the field in mm, sampled on the fixed grid as a displacement
``d(x) = T(x) - x`` (LPS mm, resampling convention) -> warped image, heatmaps, Jacobian, summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .api import CancelFn, Cancelled, ProgressFn, RegistrationOptions, Summary
from .geometry import Grid, Image, model_grid, overlap_fraction, resample, sample_on_grid
from .inputs import check_labels, check_model_spacing, check_pipeline_size
from .jacobian import jacobian_det
from .metrics import dice_per_label, folding_percent, mean_foreground_dice, std_log_jacobian
from .modelio import LoadedModel
from .preprocess import check_finite_nonconstant, normalize_intensity
from .regularizers import diffusion
from .similarity import build_similarity, deepsim_map, local_ncc_map
from .warp import warp

__all__ = [
    "RegistrationResult",
    "optimise_displacement",
    "register",
    "select_device",
]

log = logging.getLogger(__name__)


@dataclass
class RegistrationResult:
    """Everything one registration produces. ``displacement``: ``(*fixed.shape, D)`` LPS mm, the
    complete fixed -> moving mapping ``d(x) = T(x) - x``. ``model_disp``: ``(D, *model.shape)`` the
    deformable part in model voxels (channel i along tensor axis i), applied before ``affine``."""

    fixed_grid: Grid
    model_grid: Grid
    model_disp: np.ndarray
    affine: np.ndarray
    displacement: np.ndarray
    jacobian: Image
    summary: Summary
    warped: Image | None = None
    warped_labels: Image | None = None
    heatmaps: dict[str, Image] = field(default_factory=dict)


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device 'cuda' requested but no CUDA GPU is available; use --device cpu"
            )
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of auto, cpu, cuda; got {name!r}")


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _estimate_bytes(model: LoadedModel, grid: Grid, fixed: Grid, io_steps: int) -> int:
    """Rough peak memory of the whole run: network activations on the model grid, the fixed-grid
    outputs and their writing, and the overview figure (one display slice at the finest spacing)."""
    net = model.registration
    width = net.backbone.out_channels
    per_voxel = 4 * (4 * width + 16)
    if io_steps:
        per_voxel *= 6  # activations kept for the backward pass
    extent = np.asarray(fixed.shape) * fixed.spacing
    display_slice = np.prod(np.sort(extent)[-2:]) / float(fixed.spacing.min()) ** 2
    return (
        int(np.prod(grid.shape)) * per_voxel
        + int(np.prod(fixed.shape)) * 8 * 24
        + int(display_slice) * 4 * 16  # ~16 float32 slice arrays: views, grid lines, canvas
        + 2**28  # working memory of torch, SimpleITK and matplotlib beyond the arrays
    )


class _Stages:
    """Progress over named stages, with cancellation between them."""

    def __init__(self, progress: ProgressFn | None, should_cancel: CancelFn | None):
        self.progress, self.should_cancel = progress, should_cancel
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def check(self):
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("registration cancelled")

    def step(self, fraction: float, message: str, finished: str | None = None):
        now = time.perf_counter()
        if finished:
            self.timings[finished] = round(now - self._t, 4)
        self._t = now
        self.check()
        log.info("%3.0f%% %s", 100 * fraction, message)
        if self.progress is not None:
            self.progress(fraction, message)


def _to_tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None].to(device)


def register(
    fixed: Image,
    moving: Image,
    model: LoadedModel,
    options: RegistrationOptions | None = None,
    fixed_labels: Image | None = None,
    moving_labels: Image | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with ``model``. Raises ``ValueError`` on bad input,
    ``MemoryError`` when the pair will not fit, :class:`Cancelled` when cancelled."""
    opts = replace(options or RegistrationOptions())
    if opts.io_steps is None:
        opts.io_steps = model.info.default_io_steps
    if opts.io_lr is None:
        opts.io_lr = model.info.default_io_lr
    t0 = time.perf_counter()
    stages = _Stages(progress, should_cancel)
    dims = fixed.grid.spatial_dims
    if moving.grid.spatial_dims != dims:
        raise ValueError(f"fixed image is {dims}D but moving image is {moving.grid.spatial_dims}D")
    if model.spatial_dims != dims:
        raise ValueError(
            f"model {model.name!r} is {model.spatial_dims}D but the images are {dims}D"
        )
    check_finite_nonconstant(fixed.array, "fixed image")
    check_finite_nonconstant(moving.array, "moving image")
    for lab, img, what in ((fixed_labels, fixed, "fixed"), (moving_labels, moving, "moving")):
        if lab is not None:
            check_labels(lab, img, f"{what} labels")
    device = select_device(opts.device)
    pre = model.preprocessing
    if opts.model_spacing is not None:
        check_model_spacing(opts.model_spacing, "the model spacing (--model-spacing)")
    spacing = opts.model_spacing if opts.model_spacing is not None else pre.spacing
    grid = model_grid(fixed.grid, spacing, pre.multiple, pre.orientation, pre.max_voxels)
    check_pipeline_size(fixed, moving, grid, opts.affine)
    needed, available = (
        _estimate_bytes(model, grid, fixed.grid, opts.io_steps),
        _available_bytes(device),
    )
    if available is not None and needed > available:
        raise MemoryError(
            f"this pair needs about {needed / 2**30:.1f} GB on {device.type} but {available / 2**30:.1f} GB "
            f"are free (model grid {grid.shape}); use a coarser model grid (--model-spacing) "
            + (
                "or --device cpu"
                if device.type == "cuda"
                else "or fewer instance-optimisation steps"
            )
        )

    stages.step(0.02, "affine pre-alignment" if opts.affine else "checking overlap")
    affine = np.eye(dims + 1)
    if opts.affine:
        from .affine import affine_prealign

        affine = affine_prealign(fixed, moving)
    overlap = overlap_fraction(fixed.grid, moving.grid, affine)
    if overlap < 0.05:
        raise ValueError(
            f"fixed and moving images do not overlap in physical space ({100 * overlap:.1f}% of the fixed "
            "field of view maps into the moving image); check their origins and directions"
            + ("" if opts.affine else " or enable affine pre-alignment")
        )

    stages.step(0.15, f"resampling onto the model grid {grid.shape}", "affine")
    lo, hi = pre.lower_percentile, pre.upper_percentile
    fixed_norm = Image(normalize_intensity(fixed.array, lo, hi), fixed.grid)
    moving_norm = Image(normalize_intensity(moving.array, lo, hi), moving.grid)
    fixed_m = resample(fixed_norm, grid).array
    moving_m = resample(moving_norm, grid, affine).array

    stages.step(0.25, f"predicting the displacement on {device.type}", "resample")
    try:
        disp = _network_field(model, fixed_m, moving_m, device, opts, stages)
    except torch.cuda.OutOfMemoryError:
        if device.type != "cuda":
            raise
        log.warning("CUDA out of memory; retrying on the CPU")
        torch.cuda.empty_cache()
        device = torch.device("cpu")
        model.to(device)
        disp = _network_field(model, fixed_m, moving_m, device, opts, stages)
    model_disp = disp[0].cpu().numpy()

    stages.step(0.7, "mapping the field to the fixed grid", "network")
    displacement = full_displacement(model_disp, grid, fixed.grid, affine)

    model_jac = model_jacobian(model_disp, grid, affine)
    jacobian = Image(sample_on_grid(model_jac[None], grid, fixed.grid)[0], fixed.grid)
    stages.step(0.8, "warping the moving image", "field")
    warped = warp_image(moving, fixed.grid, displacement, "linear") if opts.warped else None
    warped_labels = None
    if moving_labels is not None:
        warped_labels = warp_image(moving_labels, fixed.grid, displacement, "nearest")

    stages.step(0.88, "similarity heatmaps", "warp")
    heatmaps, means = {}, {}
    if opts.heatmaps:
        heatmaps, means = _heatmaps(
            model, moving_norm, fixed_m, moving_m, disp, grid, fixed.grid, device
        )

    stages.step(0.97, "summary", "heatmaps")
    summary = Summary(
        runtime_s=round(time.perf_counter() - t0, 3),
        device=device.type,
        model=model.name,
        model_grid_shape=list(grid.shape),
        model_grid_spacing_mm=[round(float(s), 4) for s in grid.spacing],
        affine=affine.tolist(),
        folding_percent=folding_percent(model_jac),
        std_log_jacobian=std_log_jacobian(model_jac),
        jacobian_min=float(model_jac.min()),
        jacobian_max=float(model_jac.max()),
        io_steps=opts.io_steps,
        timings_s=stages.timings,
        **means,
    )
    if fixed_labels is not None and moving_labels is not None:
        before = resample(moving_labels, fixed.grid, None, "nearest").array
        summary.dice_before = mean_foreground_dice(fixed_labels.array, before)
        if opts.affine:
            aff = resample(moving_labels, fixed.grid, affine, "nearest").array
            summary.dice_affine = mean_foreground_dice(fixed_labels.array, aff)
        summary.dice_after = mean_foreground_dice(fixed_labels.array, warped_labels.array)
        summary.dice_per_label_after = {
            str(k): v for k, v in dice_per_label(fixed_labels.array, warped_labels.array).items()
        }
    stages.timings["total"] = round(time.perf_counter() - t0, 4)
    result = RegistrationResult(
        fixed.grid,
        grid,
        model_disp,
        affine,
        displacement,
        jacobian,
        summary,
        warped,
        warped_labels,
        heatmaps,
    )
    if progress is not None:
        progress(1.0, "done")
    return result


def _network_field(model, fixed_m, moving_m, device, opts, stages: _Stages) -> torch.Tensor:
    """The network's displacement, refined by instance optimisation when asked for."""
    disp = _predict(model, fixed_m, moving_m, device)
    if opts.io_steps:
        disp = _instance_optimise(model, fixed_m, moving_m, disp, device, opts, stages)
    return disp


def _predict(model: LoadedModel, fixed_m, moving_m, device) -> torch.Tensor:
    net = model.registration.to(device).eval()
    f, m = _to_tensor(fixed_m, device), _to_tensor(moving_m, device)
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        return net(m, f).float().clone()


def _instance_optimise(
    model, fixed_m, moving_m, disp, device, opts, stages: _Stages
) -> torch.Tensor:
    """Refine ``disp`` by ``opts.io_steps`` Adam steps of DeepSim + lambda * diffusion."""
    extractor = model.extractor
    if extractor is None:
        raise ValueError(
            f"model {model.name!r} has no feature extractor, so it cannot run instance optimisation"
        )
    lam = model.loss.lam
    sim = build_similarity(replace(model.loss, similarity="deepsim"), extractor.to(device))
    f, m = _to_tensor(fixed_m, device), _to_tensor(moving_m, device)

    def after_step(step: int) -> None:
        stages.check()
        if stages.progress is not None:
            stages.progress(
                0.25 + 0.45 * (step + 1) / opts.io_steps,
                f"instance optimisation {step + 1}/{opts.io_steps}",
            )

    u = optimise_displacement(
        sim, m, f, disp.to(device), lam, opts.io_steps, opts.io_lr, after_step
    )
    for p in extractor.parameters():
        p.requires_grad_(False)
    return u


def optimise_displacement(
    similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    moving: torch.Tensor,
    fixed: torch.Tensor,
    init: torch.Tensor,
    lam: float,
    steps: int,
    lr: float,
    after_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``steps`` Adam steps on a displacement ``(B, D, *spatial)`` (voxels) from ``init``,
    minimising ``similarity(warp(moving, u), fixed) + lam * diffusion(u)``; ``after_step(step)``
    runs after each step (progress, cancellation)."""
    u = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = similarity(warp(moving, u), fixed) + lam * diffusion(u)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
    return u.detach()


def full_displacement(
    model_disp: np.ndarray, grid: Grid, fixed: Grid, affine: np.ndarray
) -> np.ndarray:
    """Complete mapping ``d(x) = A(x + U(x)) - x`` on ``fixed``'s voxels, ``(*fixed.shape, D)`` LPS mm.

    ``model_disp``: ``(D, *grid.shape)`` voxels of ``grid``; ``U = grid.linear @ u`` is linearly
    interpolated (border-clamped) at the fixed voxels, as Slicer's grid transform evaluates it.
    Since ``d(x) = A_lin U(x) + (A_lin - I) x + A_t``, only ``U`` needs sampling."""
    d = fixed.spatial_dims
    u_mm = np.tensordot(affine[:d, :d] @ grid.linear, model_disp, axes=(1, 0))  # A_lin U on grid
    out = torch.from_numpy(sample_on_grid(u_mm, grid, fixed)).movedim(0, -1)  # (*fixed, D)
    # (A_lin - I) x + A_t with x = M idx + o, added one tensor axis at a time
    lin = (affine[:d, :d] - np.eye(d)) @ fixed.linear
    const = (affine[:d, :d] - np.eye(d)) @ fixed.index_to_lps[:d, d] + affine[:d, d]
    out += torch.as_tensor(const, dtype=torch.float32)
    for axis, n in enumerate(fixed.shape):
        view = [1] * d + [d]
        view[axis] = n
        steps = torch.arange(n, dtype=torch.float32)[:, None] * torch.as_tensor(
            lin[:, axis], dtype=torch.float32
        )
        out += steps.view(view)
    return out.numpy()


def model_jacobian(model_disp: np.ndarray, grid: Grid, affine: np.ndarray) -> np.ndarray:
    """Signed Jacobian determinant of ``T(x) = A(x + U(x))`` at the model grid's voxels, where the
    field lives: ``det(A_lin) det(I + dU/dx)``; ``(*grid.shape)`` float32. Computed on the model
    grid (not the finer fixed grid) so it measures the predicted field itself, cheaply."""
    d = grid.spatial_dims
    jac = jacobian_det(torch.from_numpy(np.ascontiguousarray(model_disp, np.float32))[None])[0, 0]
    return (jac * float(np.linalg.det(affine[:d, :d]))).numpy()


def warp_image(image: Image, fixed: Grid, displacement: np.ndarray, interpolator: str) -> Image:
    """Resample ``image`` onto ``fixed`` through the displacement-field transform (SimpleITK), i.e.
    exactly as any ITK tool resamples with the written ``displacement.nii.gz``."""
    import SimpleITK as sitk

    from .geometry import to_sitk

    if displacement.shape[:-1] != fixed.shape:
        raise ValueError("warp_image(): displacement does not match the fixed grid")
    field_img = to_sitk(Image(displacement.astype(np.float32), fixed), vector=True)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field_img, sitk.sitkVectorFloat64))
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolator]
    src = to_sitk(image)
    out = sitk.Resample(src, fixed.reference(), transform, interp, 0.0, src.GetPixelID())
    return Image(sitk.GetArrayFromImage(out), fixed)


def _heatmaps(model, moving_norm, fixed_m, moving_m, disp, grid, fixed_grid, device):
    """DeepSim and NCC heatmaps before (identity) and after registration, on the fixed grid."""
    before_m = resample(moving_norm, grid).array
    f = _to_tensor(fixed_m, device)
    after = warp(_to_tensor(moving_m, device), disp.to(device))
    pairs = {"before": _to_tensor(before_m, device), "after": after}
    names, arrays, means = [], [], {}
    extractor = model.extractor
    with torch.inference_mode():
        levels = None if model.loss.levels is None else list(model.loss.levels)
        fixed_feats = extractor.to(device).eval().features(f) if extractor is not None else None
        for when, img in pairs.items():
            values = {"ncc": local_ncc_map(img, f)}
            if extractor is not None:
                values["deepsim"] = deepsim_map(extractor, img, f, fixed_feats, levels)
            for kind, v in values.items():
                names.append(f"{kind}_{when}")
                arrays.append(v[0, 0].float().cpu())
                means[f"similarity_{kind}_{when}"] = float(arrays[-1].mean())
    sampled = sample_on_grid(torch.stack(arrays), grid, fixed_grid).numpy()
    return {n: Image(a, fixed_grid) for n, a in zip(names, sampled)}, means
