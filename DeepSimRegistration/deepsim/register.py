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
import torch.nn.functional as F

from .api import (
    CancelFn,
    Cancelled,
    LossSpec,
    Preprocessing,
    ProgressFn,
    RegistrationOptions,
    Summary,
)
from .engine import auto_masks, optimise
from .geometry import Grid, Image, model_grid, overlap_fraction, resample, sample_on_grid
from .inputs import check_labels, check_model_spacing, check_pipeline_size
from .jacobian import jacobian_det
from .metrics import dice_per_label, folding_percent, mean_foreground_dice, std_log_jacobian
from .modelio import LoadedModel
from .preprocess import check_finite_nonconstant, normalize_intensity
from .presets import DEEPSIM_JUDGE, engine_settings
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


def _estimate_bytes(model: LoadedModel | None, grid: Grid, fixed: Grid, io: bool) -> int:
    """Rough peak memory of the whole run: network activations on the model grid, the fixed-grid
    outputs and their writing, and the overview figure (one display slice at the finest spacing)."""
    width = model.registration.backbone.out_channels if model is not None else 8
    per_voxel = 4 * (4 * width + 16)
    if io:
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
    model: LoadedModel | None,
    options: RegistrationOptions | None = None,
    fixed_labels: Image | None = None,
    moving_labels: Image | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with ``model`` (None: training-free, the engine alone on
    a grid of ``options.model_spacing``, default the fixed image's finest spacing).
    ``fixed_mask``/``moving_mask``: label maps (non-zero = inside) on the images' grids restricting
    the similarity; without them an automatic foreground mask of the fixed image is used.
    Raises ``ValueError`` on bad input, ``MemoryError`` when the pair will not fit,
    :class:`Cancelled` when cancelled."""
    opts = replace(options or RegistrationOptions())
    if model is None:
        opts.network = False
    if opts.io_steps is not None and opts.io_steps < 0:
        raise ValueError(f"io_steps must be >= 0, got {opts.io_steps}")
    settings = engine_settings(
        opts.preset,
        model.name if model is not None else None,
        opts.similarity,
        opts.io_steps or None,
        opts.io_lr,
    )
    t0 = time.perf_counter()
    stages = _Stages(progress, should_cancel)
    dims = fixed.grid.spatial_dims
    if moving.grid.spatial_dims != dims:
        raise ValueError(f"fixed image is {dims}D but moving image is {moving.grid.spatial_dims}D")
    if model is not None and model.spatial_dims != dims:
        raise ValueError(
            f"model {model.name!r} is {model.spatial_dims}D but the images are {dims}D"
        )
    check_finite_nonconstant(fixed.array, "fixed image")
    check_finite_nonconstant(moving.array, "moving image")
    for lab, img, what in (
        (fixed_labels, fixed, "fixed labels"),
        (moving_labels, moving, "moving labels"),
        (fixed_mask, fixed, "fixed mask"),
        (moving_mask, moving, "moving mask"),
    ):
        if lab is not None:
            check_labels(lab, img, what)
    device = select_device(opts.device)
    if model is not None:
        pre = model.preprocessing
    else:
        pre = Preprocessing(spacing=float(min(fixed.grid.spacing)), multiple=1)
    if opts.model_spacing is not None:
        check_model_spacing(opts.model_spacing, "the model spacing (--model-spacing)")
    spacing = opts.model_spacing if opts.model_spacing is not None else pre.spacing
    grid = model_grid(fixed.grid, spacing, pre.multiple, pre.orientation, pre.max_voxels)
    check_pipeline_size(fixed, moving, grid, opts.affine)
    needed, available = (
        _estimate_bytes(model, grid, fixed.grid, opts.io_steps != 0),
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

        affine = affine_prealign(fixed, moving, rigid=opts.rigid)
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
    # beyond each image's field of view its edge values, not a zero padding whose artificial edge
    # the similarity would match (the masks below leave those voxels out as well)
    fixed_m = resample(fixed_norm, grid, extrapolate=True).array
    moving_m = resample(moving_norm, grid, affine, extrapolate=True).array
    masks = {
        "fixed": _grid_mask(fixed_mask, grid, None),
        "moving": _grid_mask(moving_mask, grid, affine),
    }
    if opts.io_steps != 0:  # only the engine uses them
        masks["fixed_view"] = field_of_view(fixed.grid, grid, None)
        masks["moving_view"] = field_of_view(moving.grid, grid, affine)

    stages.step(0.25, f"predicting the displacement on {device.type}", "resample")
    cache: dict = {}
    try:
        disp, engine_info = _deformable(
            model, fixed_m, moving_m, masks, settings, device, opts, stages, cache
        )
    except torch.cuda.OutOfMemoryError:
        if device.type != "cuda":
            raise
        log.warning("CUDA out of memory; retrying on the CPU")
        torch.cuda.empty_cache()
        cache.clear()
        device = torch.device("cpu")
        if model is not None:
            model.to(device)
        disp, engine_info = _deformable(
            model, fixed_m, moving_m, masks, settings, device, opts, stages, cache
        )
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
            model, moving_norm, fixed_m, moving_m, disp, grid, fixed.grid, device, cache
        )

    stages.step(0.97, "summary", "heatmaps")
    summary = Summary(
        runtime_s=round(time.perf_counter() - t0, 3),
        device=device.type,
        model=model.name if model is not None else None,
        model_grid_shape=list(grid.shape),
        model_grid_spacing_mm=[round(float(s), 4) for s in grid.spacing],
        affine=affine.tolist(),
        folding_percent=folding_percent(model_jac),
        std_log_jacobian=std_log_jacobian(model_jac),
        jacobian_min=float(model_jac.min()),
        jacobian_max=float(model_jac.max()),
        io_steps=settings.total_steps if opts.io_steps is None else opts.io_steps,
        **engine_info,
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


def field_of_view(
    image: Grid, grid: Grid, affine: np.ndarray | None, margin: int = 2
) -> np.ndarray | None:
    """Where ``grid`` (through ``affine``) sees inside ``image``'s field of view, ``margin``
    voxels in from its edge (MIND's reach), as a 0/1 float array; None when that is everywhere.
    Outside it the resampled image only repeats its edge, which must not pull the field (an
    object cut by the field of view, as CT bodies and the phantoms of the gate are)."""
    ones = Image(np.ones(image.shape, np.float32), image)
    inside = resample(ones, grid, affine, "linear").array > 0.5
    if margin:
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[grid.spatial_dims]
        outside = torch.from_numpy((~inside).astype(np.float32))[None, None]
        inside = pool(outside, 2 * margin + 1, stride=1, padding=margin)[0, 0].numpy() == 0
    if inside.all():
        return None
    return inside.astype(np.float32)


def _grid_mask(mask: Image | None, grid: Grid, affine: np.ndarray | None) -> np.ndarray | None:
    """A label map (non-zero = inside) as a 0/1 float array on the model grid."""
    if mask is None:
        return None
    inside = Image((mask.array != 0).astype(np.float32), mask.grid)
    return resample(inside, grid, affine, "linear").array


def _deformable(model, fixed_m, moving_m, masks, settings, device, opts, stages, cache):
    """The network's displacement (identity when there is none), refined by the engine; the
    result is never worse, by the engine's similarity under the mask, than its start or the
    identity (after the affine): the better of those is kept instead. ``cache`` receives what
    the heatmaps can reuse (the DeepSim judge's fixed features and map of the kept field)."""
    f, m = _to_tensor(fixed_m, device), _to_tensor(moving_m, device)
    init = _predict(model, fixed_m, moving_m, device) if opts.network else None
    if opts.io_steps == 0:
        return (init if init is not None else f.new_zeros((1, f.ndim - 2, *f.shape[2:]))), {}
    deepsim = None
    if "deepsim" in dict(settings.similarity):
        if model is None or model.extractor is None:
            raise ValueError(
                "the DeepSim similarity needs a model with a feature extractor; use ncc or mind"
            )
        # the model's own feature levels and level weights when it was trained with DeepSim
        spec = model.loss if model.loss.similarity == "deepsim" else LossSpec()
        deepsim = build_similarity(spec, model.extractor.to(device))
    fmask = _to_tensor(masks["fixed"], device) if masks["fixed"] is not None else None
    mmask = _to_tensor(masks["moving"], device) if masks["moving"] is not None else None
    mask_kind = "given"
    if fmask is None and mmask is None:
        fmask, mmask = auto_masks(f, m)
        mask_kind = "auto" if mmask is None else "auto, each image's own foreground"
    # only where both images show their own content, not padding
    fmask = _restrict(fmask, masks["fixed_view"], device)
    mmask = _restrict(mmask, masks["moving_view"], device)

    def after_step(done: int, total: int) -> None:
        stages.check()
        if stages.progress is not None:
            stages.progress(0.25 + 0.45 * done / total, f"instance optimisation {done}/{total}")

    res = optimise(
        f,
        m,
        settings,
        init,
        fmask,
        mmask,
        deepsim,
        after_step,
    )
    disp, kept = res.disp, "engine"
    if res.loss > min(res.loss_init, res.loss_identity):
        if init is not None and res.loss_init <= res.loss_identity:
            disp, kept = init, "network"
        else:
            disp, kept = torch.zeros_like(res.disp), "affine"
        log.warning("instance optimisation made the similarity worse; keeping the %s field", kept)
    judged = None
    judge = opts.deepsim_judge
    if judge is None:
        judge = model is not None and model.name in DEEPSIM_JUDGE
    if kept == "engine" and init is not None and judge and model.extractor is not None:
        maps = _judge_maps(model, m, f, {"network": init, "engine": disp}, cache)
        judged = {k: float(v.mean()) for k, v in maps.items()}
        if judged["network"] > judged["engine"]:
            disp, kept = init, "network"
            log.info("the model's DeepSim rates the network's field above the engine's; keeping it")
        cache["deepsim_after"] = maps[kept]
    info = {
        "preset": opts.preset if opts.io_steps is None else None,
        "engine": settings.to_dict(),
        "engine_steps": res.steps,
        "engine_kept": kept,
        "engine_loss": {
            "identity": res.loss_identity,
            "start": res.loss_init,
            "final": res.loss,
        },
        "mask": mask_kind,
        "deepsim_judge": judged,
    }
    return disp, info


def _judge_maps(model: LoadedModel, moving, fixed, fields: dict, cache: dict) -> dict:
    """The model's own DeepSim heatmap of ``warp(moving, u)`` against ``fixed`` on the model grid
    for each named field ``u``: the judge between the network's field and the engine's, a
    similarity the engine does not optimise (``benchmarks/engine_arbiter.py``). The fixed image's
    features go into ``cache`` for the heatmaps."""
    extractor = model.extractor.to(fixed.device).eval()
    levels = _feature_levels(model)
    with torch.inference_mode():
        cache["fixed_features"] = extractor.features(fixed)
        return {
            name: deepsim_map(extractor, warp(moving, u), fixed, cache["fixed_features"], levels)
            for name, u in fields.items()
        }


def _feature_levels(model: LoadedModel | None) -> list[int] | None:
    """The DeepSim feature levels the model was trained with (None: all)."""
    if model is None or model.loss.levels is None:
        return None
    return list(model.loss.levels)


def _restrict(mask: torch.Tensor | None, view: np.ndarray | None, device) -> torch.Tensor | None:
    """``mask`` limited to ``view`` (either may be None: no limit)."""
    if view is None:
        return mask
    inside = _to_tensor(view, device)
    return inside if mask is None else mask * inside


def _predict(model: LoadedModel, fixed_m, moving_m, device) -> torch.Tensor:
    net = model.registration.to(device).eval()
    f, m = _to_tensor(fixed_m, device), _to_tensor(moving_m, device)
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        return net(m, f).float().clone()


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


def _heatmaps(model, moving_norm, fixed_m, moving_m, disp, grid, fixed_grid, device, cache):
    """DeepSim and NCC heatmaps before (identity) and after registration, on the fixed grid;
    what ``cache`` holds from the DeepSim judge (same device) is reused, not recomputed."""
    before_m = resample(moving_norm, grid, extrapolate=True).array
    f = _to_tensor(fixed_m, device)
    after = warp(_to_tensor(moving_m, device), disp.to(device))
    pairs = {"before": _to_tensor(before_m, device), "after": after}
    names, arrays, means = [], [], {}
    extractor = model.extractor if model is not None else None
    with torch.inference_mode():
        levels = _feature_levels(model)
        fixed_feats = None
        if extractor is not None:
            fixed_feats = cache.get("fixed_features") or extractor.to(device).eval().features(f)
        for when, img in pairs.items():
            values = {"ncc": local_ncc_map(img, f)}
            if extractor is not None:
                judged = cache.get("deepsim_after") if when == "after" else None
                if judged is None:
                    judged = deepsim_map(extractor, img, f, fixed_feats, levels)
                values["deepsim"] = judged
            for kind, v in values.items():
                names.append(f"{kind}_{when}")
                arrays.append(v[0, 0].float().cpu())
                means[f"similarity_{kind}_{when}"] = float(arrays[-1].mean())
    sampled = sample_on_grid(torch.stack(arrays), grid, fixed_grid).numpy()
    return {n: Image(a, fixed_grid) for n, a in zip(names, sampled)}, means
