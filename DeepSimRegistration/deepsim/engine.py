"""Multi-resolution instance optimisation of a dense field on one grid, 2D and 3D.

One code path for ``register()`` (CLI, Slicer) and the benchmarks. On each level of an image
pyramid (Gaussian-smoothed, then downsampled by ``shrink``) Adam optimises an update ``delta``
composed after the field carried from the coarser level (or the network's prediction):
``u = delta + base(x + delta(x))``, i.e. ``phi = phi_base o phi_delta``. ``delta`` is a Gaussian-
smoothed parameter field (the smoothing of the update that ANTs SyN and ConvexAdam apply), either
used directly or, when ``diffeomorphic``, integrated as a stationary velocity field by scaling and
squaring, so every update is invertible. Loss: the weighted similarities under a mask plus
``regularization`` times the diffusion of ``base + delta`` (``regularize_field``; the start, such
as a network's prediction, is smoothed too where the data cannot see) or of ``delta`` alone.
When MIND is the only similarity, a level may evaluate it at a fresh random sample of mask voxels
each step (``samples``: elastix's random sampler), interpolating the field and the moving
descriptors at those points only. A level stops early when the loss has improved by less than
``tolerance`` (relative) over ``patience`` steps.

Tensors follow :mod:`deepsim.warp`: images ``(1, 1, *spatial)``, displacements ``(1, D, *spatial)``
in voxels of the grid they live on, ``warp(moving, u) ~ fixed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .mind import mind_ssc
from .presets import EngineSettings, LevelSettings
from .regularizers import diffusion
from .similarity import DeepSimLoss, local_ncc_map
from .warp import (
    compose,
    integrate_velocity,
    interp_mode,
    resize_displacement,
    sample_at,
    warp,
)

__all__ = [
    "EngineResult",
    "auto_masks",
    "foreground_mask",
    "optimise",
]

StepFn = Callable[[int, int], None]


@dataclass
class EngineResult:
    """``disp``: ``(1, D, *shape)`` voxels; ``steps``: steps run per level; ``loss``: final
    similarity under the mask on the finest level; ``loss_init``: the same at the initial field."""

    disp: torch.Tensor
    steps: list[int] = field(default_factory=list)
    loss: float = float("nan")
    loss_init: float = float("nan")
    loss_identity: float = float("nan")


def foreground_mask(image: torch.Tensor, dilation: int = 2) -> torch.Tensor:
    """Automatic mask: voxels above 5 % of the robust intensity range, dilated by ``dilation``
    voxels; everything when that leaves under 1 % (no dark background)."""
    flat = image.flatten()[:: max(1, image.numel() // 200_000)].float()
    lo, hi = torch.quantile(flat, torch.tensor([0.01, 0.99], dtype=flat.dtype))
    mask = (image > lo + 0.05 * (hi - lo)).float()
    if dilation:
        pool = {2: F.max_pool2d, 3: F.max_pool3d}[image.ndim - 2]
        mask = pool(mask, 2 * dilation + 1, stride=1, padding=dilation)
    if mask.mean() < 0.01 or mask.mean() > 0.99:
        return torch.ones_like(image)
    return mask


def auto_masks(
    fixed: torch.Tensor, moving: torch.Tensor, ratio: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The masks used when the user gives none: ``(fixed_mask, moving_mask)``.

    When both images show about the same extent of foreground (both skull-stripped, or both not),
    the fixed foreground dilated by 2 voxels, so the object's outline counts. When one shows more
    than ``ratio`` times the other's (a skull-stripped brain against a whole head), each image's
    own foreground, undilated: the similarity is taken only where both show the object, so the
    other image's skull and scalp pull nothing (with the dilated mask, they pulled the brain
    outline: brain-mask Dice 0.869 after the affine fell to 0.825; with these, 0.926)."""
    f0, m0 = foreground_mask(fixed, dilation=0), foreground_mask(moving, dilation=0)
    extent = float(m0.mean()) / max(float(f0.mean()), 1e-6)
    if 1 / ratio <= extent <= ratio:
        return foreground_mask(fixed), None
    return f0, m0


def _level_shape(shape: tuple[int, ...], shrink: int) -> tuple[int, ...]:
    return tuple(max(4, round((n - 1) / shrink) + 1) for n in shape)


def _downsample(x: torch.Tensor, shape: tuple[int, ...], shrink: int) -> torch.Tensor:
    if tuple(x.shape[2:]) == shape:
        return x
    if shrink > 1:
        x = _smooth(x, 0.5 * shrink)
    return F.interpolate(x, size=shape, mode=interp_mode(len(shape)), align_corners=True)


def _unravel(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, D)`` indices of flat (C-order) indices into ``shape``; ``torch.unravel_index`` would
    import sympy on its first call (0.5 s of a fresh process)."""
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat = flat // n
    return torch.stack(out[::-1], 1)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)


class _Level:
    """Fixed data of one level: images, features, mask; evaluates the similarity of a field."""

    def __init__(self, settings, shape, shrink, fixed, moving, fmask, mmask, deepsim):
        self.settings, self.shape = settings, shape
        self.fixed = _downsample(fixed, shape, shrink)
        self.moving = _downsample(moving, shape, shrink)
        self.fmask = _downsample(fmask, shape, shrink) if fmask is not None else None
        self.mmask = _downsample(mmask, shape, shrink) if mmask is not None else None
        self.fixed_weight = self.fmask if self.fmask is not None else torch.ones_like(self.fixed)
        terms = dict(settings.similarity)
        # DeepSim needs the extractor's own resolution: full resolution only
        if "deepsim" in terms and (deepsim is None or shrink != 1):
            terms.pop("deepsim")
        if not terms:
            terms = {"ncc": 1.0}
        self.terms, self.deepsim = terms, deepsim
        if "mind" in terms:
            self.fixed_mind = mind_ssc(self.fixed)
            self.moving_mind = mind_ssc(self.moving)
            # for the sampled MIND term: the voxels it may draw and their descriptors
            self._candidates = torch.nonzero(self.fixed_weight.flatten() > 0).flatten()
            self._fixed_mind = self.fixed_mind.flatten(2)[0]
        if "deepsim" in terms:
            with torch.no_grad():
                self.fixed_feats = deepsim.features(self.fixed)

    def sampled(self, samples: int) -> bool:
        """Whether ``samples`` random voxels stand in for the whole level (MIND alone)."""
        return 0 < samples < self.fixed.numel() and self.terms.keys() == {"mind"}

    def sampled_similarity(
        self,
        delta: torch.Tensor,
        base: torch.Tensor | None,
        samples: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The MIND term at ``samples`` random voxels of the fixed mask of the field
        ``phi_base o phi_delta`` (``delta`` on its parameter grid): the field, the moving
        descriptors and the moving mask are interpolated at those points only."""
        pick = torch.randint(len(self._candidates), (samples,), generator=generator)
        # in memory order: the interpolation then reads neighbouring voxels (~3x faster on CPU)
        idx = self._candidates[pick.sort().values.to(self._candidates.device)]
        points = _unravel(idx, self.shape).to(self.fixed.dtype)
        ratio = torch.tensor(
            [(p - 1) / max(n - 1, 1) for p, n in zip(delta.shape[2:], self.shape)],
            dtype=points.dtype,
            device=points.device,
        )
        u = sample_at(delta, points * ratio) / ratio
        if base is not None:
            u = u + sample_at(base, points + u)
        target = points + u
        ssd = (sample_at(self.moving_mind, target) - self._fixed_mind[:, idx].T).pow(2).mean(1)
        w = self.fixed_weight.flatten()[idx]
        if self.mmask is not None:
            w = w * sample_at(self.mmask, target.detach())[:, 0]
        return self.terms["mind"] * _weighted_mean(ssd, w)

    def weight(self, u: torch.Tensor) -> torch.Tensor:
        if self.mmask is None:
            return self.fixed_weight
        return self.fixed_weight * warp(self.mmask, u.detach())

    def similarity(self, u: torch.Tensor) -> torch.Tensor:
        w = self.weight(u)
        total = u.new_zeros(())
        warped = warp(self.moving, u) if {"ncc", "deepsim"} & self.terms.keys() else None
        for name, lam in self.terms.items():
            if lam == 0:
                continue
            if name == "ncc":
                cc = local_ncc_map(warped, self.fixed, self.settings.ncc_window)
                total = total + lam * (1.0 - _weighted_mean(cc, w))
            elif name == "mind":
                ssd = (warp(self.moving_mind, u) - self.fixed_mind).pow(2).mean(1, keepdim=True)
                total = total + lam * _weighted_mean(ssd, w)
            else:
                total = total + lam * self.deepsim.masked(warped, self.fixed_feats, w)
        return total


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing (``sigma`` voxels, truncated at 3 sigma, weights renormalised at the
    borders) as one small dense matrix product per axis: much faster on CPU than a depthwise
    convolution, forward and backward."""
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        i = torch.arange(n, device=x.device, dtype=x.dtype)
        dist = (i[:, None] - i[None, :]).abs()
        kernel = torch.exp(-0.5 * (dist / sigma) ** 2) * (dist <= 3 * sigma)
        kernel = kernel / kernel.sum(1, keepdim=True)
        x = torch.tensordot(x, kernel, dims=([axis], [1])).movedim(-1, axis)
    return x


class _Adam:
    """Adam (Kingma and Ba; the update of ``torch.optim.Adam`` with its defaults) on one tensor.
    Constructing ``torch.optim.Adam`` first imports ``torch._dynamo``: about 2.5 s on this CPU,
    which every registration in a fresh process (each CLI call, Slicer's first) would pay."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v, self.t = torch.zeros_like(param), torch.zeros_like(param), 0

    @torch.no_grad()
    def step(self) -> None:
        (b1, b2), g = self.betas, self.param.grad
        self.t += 1
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v.sqrt() / (1 - b2**self.t) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))
        self.param.grad = None


def _update(p: torch.Tensor, lv: LevelSettings, settings: EngineSettings) -> torch.Tensor:
    """The update on its parameter grid: smoothed, integrated when diffeomorphic."""
    delta = _smooth(p, lv.smooth) if lv.smooth > 0 else p
    if settings.diffeomorphic:
        delta = integrate_velocity(delta, settings.integration_steps)
    return delta


def _field(delta: torch.Tensor, lshape, lbase: torch.Tensor | None) -> torch.Tensor:
    """``phi_base o phi_delta`` on the level grid, ``delta`` upsampled from its parameter grid."""
    if tuple(delta.shape[2:]) != tuple(lshape):
        delta = resize_displacement(delta, tuple(lshape))
    return compose(lbase, delta) if lbase is not None else delta


def optimise(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    settings: EngineSettings | None = None,
    init: torch.Tensor | None = None,
    fixed_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    deepsim: DeepSimLoss | None = None,
    after_step: StepFn | None = None,
) -> EngineResult:
    """Register ``moving`` to ``fixed`` (``(1, 1, *shape)``, same grid); returns the field.

    ``init``: initial displacement (e.g. the network's), else identity (training-free).
    ``fixed_mask``/``moving_mask``: weights in [0, 1] restricting the similarity (None = all).
    ``deepsim``: the model's DeepSim loss (its extractor, feature levels and level weights), for
    the ``deepsim`` similarity.
    ``after_step(done, total)`` runs after every step (progress, cancellation by raising)."""
    settings = settings or EngineSettings()
    shape = tuple(fixed.shape[2:])
    dims = len(shape)
    fixed, moving = fixed.float(), moving.float()
    zero = fixed.new_zeros((1, dims, *shape))
    total_steps = sum(lv.steps for lv in settings.levels)
    done = 0
    base = init.detach().float() if init is not None else None
    levels: dict[tuple[int, ...], _Level] = {}

    def level_for(shrink: int) -> _Level:
        lshape = _level_shape(shape, shrink)
        if lshape not in levels:
            levels[lshape] = _Level(
                settings, lshape, shrink, fixed, moving, fixed_mask, moving_mask, deepsim
            )
        return levels[lshape]

    # the finest level judges the initial and the final field (for the caller's fallback check)
    judge = level_for(min(lv.shrink for lv in settings.levels))

    finest = min(settings.levels, key=lambda lv: lv.shrink)
    judge_samples = 4 * finest.samples if judge.sampled(4 * finest.samples) else 0

    def judge_loss(u: torch.Tensor | None) -> float:
        with torch.no_grad():
            u = resize_displacement(zero if u is None else u, judge.shape)
            if judge_samples:  # the same points for every field judged
                gen = torch.Generator().manual_seed(1)
                return float(judge.sampled_similarity(u, None, judge_samples, gen))
            return float(judge.similarity(u))

    loss_init = judge_loss(base)
    loss_identity = judge_loss(None) if base is not None else loss_init
    steps_run = []
    generator = torch.Generator().manual_seed(0)  # the same samples on every run
    for lv in settings.levels:
        level = level_for(lv.shrink)
        lshape = level.shape
        lbase = resize_displacement(base, lshape) if base is not None else None
        pshape = _level_shape(lshape, lv.grid) if lv.grid > 1 else lshape
        p = fixed.new_zeros((1, dims, *pshape), requires_grad=True)
        # what the regulariser adds the update to: nothing, or the field so far on the update's
        # grid (base + delta: the first-order composition)
        reg_base = None
        if settings.regularize_field and lbase is not None:
            reg_base = resize_displacement(lbase, pshape) if pshape != lshape else lbase
        sampled = level.sampled(lv.samples)
        opt = _Adam(p, lv.lr)
        history: list[float] = []
        for _ in range(lv.steps):
            delta = _update(p, lv, settings)
            if sampled:
                sim = level.sampled_similarity(delta, lbase, lv.samples, generator)
            else:
                sim = level.similarity(_field(delta, lshape, lbase))
            smooth = delta if reg_base is None else delta + reg_base
            loss = sim + settings.regularization * diffusion(smooth)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            done += 1
            if after_step is not None:
                after_step(done, total_steps)
            k = settings.patience
            if len(history) > k and history[-k - 1] - history[-1] < settings.tolerance * abs(
                history[-k - 1]
            ):
                break
        steps_run.append(len(history))
        done += lv.steps - len(history)
        with torch.no_grad():
            u = _field(_update(p.detach(), lv, settings), lshape, lbase)
            base = resize_displacement(u, shape) if lshape != shape else u
    disp = base if base is not None else zero
    loss = judge_loss(disp)
    return EngineResult(disp.detach(), steps_run, loss, loss_init, loss_identity)
