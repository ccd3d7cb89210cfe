"""Image similarity: MSE, local squared NCC, NCC_sup and DeepSim, each as a loss and as a map.

Losses are minimised. Maps are ``(B, 1, *spatial)`` on the image grid, higher = more similar.
References: Czolbe et al., "Semantic similarity metrics for learned image registration", MIDL 2021;
squared local NCC as in VoxelMorph (Balakrishnan et al., TMI 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .api import LossSpec
from .warp import interp_mode, warp

__all__ = [
    "build_similarity",
    "mse",
    "local_ncc_map",
    "ncc_loss",
    "cosine_maps",
    "deepsim_loss_from_features",
    "DeepSimLoss",
    "deepsim_map",
    "NCCSupLoss",
    "VGGFeatures",
    "one_hot",
]

EPS = 1e-6


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error; loss in ``[0, inf)``, minimise."""
    return F.mse_loss(a, b)


def _box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a ``window``-wide box with zero padding, as separable 1D average pools."""
    spatial_dims = x.ndim - 2
    pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[spatial_dims]
    for axis in range(spatial_dims):
        kernel = [1] * spatial_dims
        kernel[axis] = window
        pad = [0] * spatial_dims
        pad[axis] = window // 2
        x = pool(x, tuple(kernel), stride=1, padding=tuple(pad), count_include_pad=True) * window
    return x


def local_ncc_map(a: torch.Tensor, b: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Squared local normalised cross-correlation per voxel, in ``[0, 1]`` (1 = linearly related).

    ``cc = cov^2 / max(var_a var_b, 1e-6)`` over a ``window``^D box (zero padding), computed from
    window sums as in the paper's ``ncc2``; flat regions give 0 rather than NaN.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"local_ncc_map(): window must be odd and positive, got {window}")
    if a.shape != b.shape:
        raise ValueError(f"local_ncc_map(): shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.float(), b.float()
    n = float(window ** (a.ndim - 2))
    sa, sb = _box_sum(a, window), _box_sum(b, window)
    saa, sbb, sab = _box_sum(a * a, window), _box_sum(b * b, window), _box_sum(a * b, window)
    cross = sab - sa * sb / n
    var_a = saa - sa * sa / n
    var_b = sbb - sb * sb / n
    return (cross * cross / torch.clamp(var_a * var_b, min=EPS)).mean(dim=1, keepdim=True)


def ncc_loss(a: torch.Tensor, b: torch.Tensor, window: int = 9) -> torch.Tensor:
    """``1 - mean(local squared NCC)``; in ``[0, 1]``, minimise (the paper's NCC)."""
    return 1.0 - local_ncc_map(a, b, window).mean()


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, 1, *spatial)`` integer labels to ``(B, K, *spatial)`` float one-hot."""
    return F.one_hot(labels[:, 0].long(), n_classes).movedim(-1, 1).float()


def cosine_maps(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-pixel cosine similarity over channels for each level, ``(B, *spatial_l)``, in float32.

    Squared norms are clamped at 1e-6 before the square root, exactly as the paper's DeepSim.
    """
    if len(feats_a) != len(feats_b):
        raise ValueError(f"cosine_maps(): {len(feats_a)} vs {len(feats_b)} feature levels")
    maps = []
    for fa, fb in zip(feats_a, feats_b):
        fa, fb = fa.float(), fb.float()
        prod = (fa * fb).sum(dim=1)
        na = torch.clamp((fa * fa).sum(dim=1), min=EPS).sqrt()
        nb = torch.clamp((fb * fb).sum(dim=1), min=EPS).sqrt()
        maps.append(prod / (na * nb))
    return maps


def deepsim_loss_from_features(
    feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], weights: list[float] | None = None
) -> torch.Tensor:
    """``1 - sum_l w_l mean(cos_l)`` with equal weights by default; in ``[0, 2]``, minimise."""
    return _one_minus_weighted([m.mean() for m in cosine_maps(feats_a, feats_b)], weights)


def _one_minus_weighted(level_means: list[torch.Tensor], weights) -> torch.Tensor:
    means = torch.stack(level_means)
    if weights is None:
        return 1.0 - means.mean()
    w = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
    if w.numel() != means.numel():
        raise ValueError(f"DeepSim: {means.numel()} levels but {w.numel()} weights")
    return 1.0 - (means * w).sum() / w.sum()


class DeepSimLoss(nn.Module):
    """DeepSim: cosine similarity of the feature levels of a frozen extractor.

    ``forward(warped, fixed)``: the extractor is frozen, kept in eval mode inside the loss (BN uses
    running statistics, dropout is off) and the fixed image's features carry no gradient, so
    gradients flow to ``warped`` only. Loss in ``[0, 2]``, 0 for identical features; minimise.
    """

    def __init__(self, extractor: nn.Module, levels: list[int] | None = None, weights=None):
        super().__init__()
        if not hasattr(extractor, "features"):
            raise TypeError("DeepSimLoss: extractor must have a features(x) -> list[Tensor] method")
        self.extractor = extractor
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        self.levels = levels
        self.weights = weights

    def train(self, mode: bool = True) -> "DeepSimLoss":
        super().train(mode)
        self.extractor.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The levels this loss compares, of ``x``."""
        self.extractor.eval()
        if self.levels is None:
            return self.extractor.features(x)
        feats = self.extractor.features(x, max(self.levels) + 1)  # skip unused deeper stages
        return [feats[i] for i in self.levels]

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(fixed)
        with torch.autocast(device_type=warped.device.type, enabled=False):
            return deepsim_loss_from_features(self.features(warped), target, self.weights)

    def masked(
        self, warped: torch.Tensor, fixed_feats: list[torch.Tensor], weight: torch.Tensor
    ) -> torch.Tensor:
        """The loss with each level's cosine map averaged under ``weight`` ``(1, 1, *spatial)``
        (resampled to the level), against precomputed ``fixed_feats``."""
        means = []
        for m in cosine_maps(self.features(warped), fixed_feats):
            w = F.interpolate(weight, size=m.shape[1:], mode=interp_mode(m.ndim - 1))
            means.append((m.unsqueeze(1) * w).sum() / w.sum().clamp_min(1e-6))
        return _one_minus_weighted(means, self.weights)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, weights={self.weights}"


@torch.no_grad()
def deepsim_map(
    extractor: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    feats_b: list[torch.Tensor] | None = None,
    levels: list[int] | None = None,
) -> torch.Tensor:
    """DeepSim similarity heatmap ``(B, 1, *spatial)``: each level's cosine map upsampled
    (linear, ``align_corners=False``) to the image grid, then averaged over levels; in ``[-1, 1]``.
    ``feats_b``: ``b``'s features when already computed (several maps against one fixed image);
    ``levels``: the feature levels to use (all by default)."""
    extractor.eval()
    if feats_b is None:
        feats_b = extractor.features(b)
    feats_a = extractor.features(a)
    if levels is not None:
        feats_a, feats_b = [feats_a[i] for i in levels], [feats_b[i] for i in levels]
    maps = cosine_maps(feats_a, feats_b)
    size = tuple(a.shape[2:])
    mode = interp_mode(a.ndim - 2)
    up = [F.interpolate(m.unsqueeze(1), size=size, mode=mode, align_corners=False) for m in maps]
    return torch.stack(up).mean(dim=0)


class NCCSupLoss(nn.Module):
    """NCC_sup: local squared NCC plus MSE between the warped one-hot moving labels (bilinear) and
    the fixed one-hot labels, weight 1; minimise."""

    def __init__(self, n_classes: int, window: int = 9):
        super().__init__()
        self.n_classes, self.window = n_classes, window

    def forward(self, warped, fixed, disp, moving_labels, fixed_labels) -> torch.Tensor:
        warped_onehot = warp(one_hot(moving_labels, self.n_classes), disp)
        return ncc_loss(warped, fixed, self.window) + F.mse_loss(
            warped_onehot, one_hot(fixed_labels, self.n_classes)
        )


# torchvision's vgg16().features layout up to relu3_3, so its state-dict keys load unchanged
_VGG_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256]
_VGG_SLICES = [(0, 4), (4, 9), (9, 16)]  # relu1_2 (full res), relu2_2 (1/2), relu3_3 (1/4)


class VGGFeatures(nn.Module):
    """VGG16 feature levels for the paper's VGG baseline (2D only).

    Weights are never downloaded: pass the path of a local copy of torchvision's ImageNet VGG16
    state dict (``vgg16-397923af.pth``). The grey image is repeated to 3 channels without ImageNet
    normalisation, as in the original.
    """

    def __init__(self, weights_path: str | Path):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGGFeatures: no ImageNet VGG16 weights at {path}. They are not downloaded; copy "
                "torchvision's vgg16 state dict (vgg16-397923af.pth) there to use the VGG baseline."
            )
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = item
        self.features_seq = nn.Sequential(*layers)
        state = torch.load(path, map_location="cpu", weights_only=True)
        prefix = "features."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        own = {k: v for k, v in own.items() if int(k.split(".")[0]) < len(layers)}
        self.features_seq.load_state_dict(own, strict=True)
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"VGGFeatures: 2D images (B, 1, H, W) only, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1)
        out = []
        for start, stop in _VGG_SLICES[:depth]:
            x = self.features_seq[start:stop](x)
            out.append(x)
        return out


def build_similarity(
    spec: LossSpec, extractor: nn.Module | None = None
) -> Callable[..., torch.Tensor]:
    """The similarity loss a :class:`~deepsim.api.LossSpec` names, the one place that interprets
    it (training, instance optimisation, benchmarks). Called as ``loss(warped, fixed)``, except
    NCC_sup: ``loss(warped, fixed, disp, moving_labels, fixed_labels)``. ``extractor``: the
    DeepSim feature extractor (required for ``deepsim``)."""
    name = spec.similarity
    if name == "mse":
        return mse
    if name == "ncc":
        return lambda warped, fixed: ncc_loss(warped, fixed, spec.window)
    if name == "ncc_sup":
        if spec.n_classes is None:
            raise ValueError("the ncc_sup similarity needs loss.n_classes")
        return NCCSupLoss(spec.n_classes, spec.window)
    if name == "deepsim":
        if extractor is None:
            raise ValueError("the deepsim similarity needs a feature extractor")
        return DeepSimLoss(
            extractor,
            None if spec.levels is None else list(spec.levels),
            None if spec.level_weights is None else list(spec.level_weights),
        )
    if name == "vgg":
        if spec.vgg_weights is None:
            raise ValueError("the vgg similarity needs loss.vgg_weights")
        return DeepSimLoss(VGGFeatures(spec.vgg_weights))
    raise ValueError(f"unknown similarity {name!r}")
