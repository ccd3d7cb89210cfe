"""Networks of DeepSim: the stage block, the U-Net backbone, the two feature extractors
(segmentation U-Net for DeepSim_seg, skip-less autoencoder for DeepSim_ae) and the registration U-Net.

Layers are looked up by ``spatial_dims``, so one code path serves 2D and 3D (Czolbe et al., MIDL 2021).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .warp import integrate_velocity, interp_mode

__all__ = [
    "NetworkConfig",
    "Stage",
    "UNetBackbone",
    "SegmentationNet",
    "AutoEncoder",
    "RegistrationNet",
    "flow_features",
    "local_normalise",
    "build_network",
]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
_AVG_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


def _check_dims(name: str, spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims}")


@dataclass
class NetworkConfig:
    """Everything needed to rebuild a network; round-trips through JSON (``asdict``/``from_dict``).

    kind: ``segmentation`` | ``autoencoder`` | ``registration``.
    channels: encoder channels per stage; each stage halves the resolution.
    n_classes: output classes of the segmentation net (background included).
    integration_steps: scaling-and-squaring steps of the registration net (0 = direct field).
    stem_channels: feature extractors only: a first stage of this width at full resolution
        (stride 1) before the U-Net, whose output is DeepSim feature level 0 at the model grid's
        resolution (0 = none: level 0 is at half resolution).
    shrink: registration net only: the U-Net sees its inputs average-pooled by this factor and
        its field is upsampled back (a coarse network that predicts the large deformation
        cheaply; the engine refines at the full resolution).
    flow_features: registration net only: the U-Net also sees :func:`flow_features` of its
        inputs, the local evidence of motion, which a plain U-Net must otherwise discover.
    local_flow: registration net only: the U-Net also sees :func:`local_flow` estimates of its
        inputs at full resolution and pooled by 2 and by 4 (before the ``shrink`` pooling), so
        its field can be as precise as the full-resolution images allow, and larger motions
        are still within reach of the coarser estimates.
    input_window: feature extractors only: each input is first normalised to zero mean and unit
        spread in a box of this width (:func:`local_normalise`, as local NCC does; 0 = raw
        intensities), so features cannot depend on smooth intensity changes (bias, contrast);
        an autoencoder then reconstructs the normalised image.
    """

    kind: Literal["segmentation", "autoencoder", "registration"]
    spatial_dims: int
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    bnorm: bool = True
    dropout: float = 0.0
    n_classes: int = 2
    head_channels: int | None = None
    integration_steps: int = 0
    stem_channels: int = 0
    shrink: int = 1
    flow_features: bool = False
    local_flow: bool = False
    input_window: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"NetworkConfig: unknown keys {sorted(unknown)}")
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


class Stage(nn.Module):
    """[BN(in)] -> Conv(k4 s2 or k3 s1) -> LReLU(0.2) -> Conv k3 -> LReLU(0.2) -> [channel dropout]."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        downsample: bool,
        bnorm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_dims("Stage", spatial_dims)
        conv = _CONV[spatial_dims]
        layers: list[nn.Module] = []
        if bnorm:
            layers.append(_NORM[spatial_dims](in_channels))
        if downsample:
            layers.append(conv(in_channels, out_channels, kernel_size=4, stride=2, padding=1))
        else:
            layers.append(conv(in_channels, out_channels, kernel_size=3, padding=1))
        layers += [
            nn.LeakyReLU(0.2),
            conv(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2),
        ]
        if dropout > 0:
            layers.append(_DROPOUT[spatial_dims](dropout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNetBackbone(nn.Module):
    """Encoder of down-sampling stages and a decoder of (stage, x2 upsample, concat skip).

    ``forward`` returns ``(out, levels)``: ``out`` at full resolution with ``channels[0] + in_channels``
    channels (with skips) or ``channels[0]`` (without), and ``levels`` the encoder stage outputs at
    1/2, 1/4, ... resolution: the DeepSim feature levels.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: list[int],
        skip_connections: bool = True,
        bnorm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_dims("UNetBackbone", spatial_dims)
        if not channels:
            raise ValueError("UNetBackbone: channels must not be empty")
        self.skip = skip_connections
        self.spatial_dims = spatial_dims
        enc_in = [in_channels] + channels[:-1]
        self.encoder = nn.ModuleList(
            Stage(spatial_dims, i, o, True, bnorm, dropout) for i, o in zip(enc_in, channels)
        )
        skips = [in_channels] + channels[:-1]  # what is concatenated after each upsampling
        self.decoder = nn.ModuleList()
        prev = channels[-1]
        for level in reversed(range(len(channels))):
            out = channels[level]
            self.decoder.append(Stage(spatial_dims, prev, out, False, False, dropout))
            prev = out + (skips[level] if skip_connections else 0)
        self.out_channels = prev
        self.upsample = nn.Upsample(
            scale_factor=2, mode=interp_mode(spatial_dims), align_corners=False
        )

    def encode(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Outputs of the first ``depth`` encoder stages (all by default)."""
        levels = []
        for stage in self.encoder[:depth]:
            x = stage(x)
            levels.append(x)
        return levels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stride = 2 ** len(self.encoder)
        if any(n % stride for n in x.shape[2:]):
            raise ValueError(
                f"UNetBackbone: spatial shape must be a multiple of {stride}, got {tuple(x.shape[2:])}"
            )
        inputs = [x]
        levels = self.encode(x)
        inputs += levels[:-1]
        y = levels[-1]
        for stage, skip in zip(self.decoder, reversed(inputs)):
            y = self.upsample(stage(y))
            if self.skip:
                y = torch.cat([y, skip], dim=1)
        return y, levels


def _head(spatial_dims: int, in_ch: int, width: int, out_ch: int, kernel_out: int) -> nn.Sequential:
    conv = _CONV[spatial_dims]
    return nn.Sequential(
        conv(in_ch, width, 3, padding=1),
        nn.LeakyReLU(0.2),
        conv(width, width, 3, padding=1),
        nn.LeakyReLU(0.2),
        conv(width, out_ch, kernel_out, padding=kernel_out // 2),
    )


class FeatureExtractor(nn.Module):
    """Base of the DeepSim feature extractors: an optional full-resolution ``stem`` stage, then a
    U-Net ``backbone``; ``features(x)`` returns the stem's and the encoder stages' outputs."""

    def __init__(self, cfg: NetworkConfig, skip_connections: bool):
        super().__init__()
        self.input_window = cfg.input_window
        self.stem = None
        width = 1
        if cfg.stem_channels:
            width = cfg.stem_channels
            self.stem = Stage(cfg.spatial_dims, 1, width, False, cfg.bnorm, cfg.dropout)
        self.backbone = UNetBackbone(
            cfg.spatial_dims, width, cfg.channels, skip_connections, cfg.bnorm, cfg.dropout
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the network sees it: locally normalised when ``input_window`` is set."""
        return local_normalise(x, self.input_window) if self.input_window else x

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        return self.backbone(self.stem(x) if self.stem is not None else x)[0]

    def features(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """The DeepSim feature levels; ``depth`` stops after that many levels."""
        x = self.prepare(x)
        if self.stem is None:
            return self.backbone.encode(x, depth)
        x = self.stem(x)
        return [x] + self.backbone.encode(x, None if depth is None else depth - 1)


class SegmentationNet(FeatureExtractor):
    """U-Net segmentation model (DeepSim_seg); ``forward`` returns class logits ``(B, K, *spatial)``."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__(cfg, True)
        width = cfg.head_channels or self.backbone.out_channels
        self.head = _head(cfg.spatial_dims, self.backbone.out_channels, width, cfg.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._decode(x))


class AutoEncoder(FeatureExtractor):
    """Skip-less autoencoder (DeepSim_ae); ``forward`` returns the reconstruction of
    :meth:`prepare`'s image: in ``[0, 1]`` for raw intensities, unbounded when normalised."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__(cfg, False)
        width = cfg.head_channels or self.backbone.out_channels
        self.head = _head(cfg.spatial_dims, self.backbone.out_channels, width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self._decode(x))
        return y if self.input_window else torch.sigmoid(y)


def flow_features(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + D, *spatial)``: the difference ``d = fixed - moving`` and, per axis, ``4 d g``
    with ``g`` the gradient of the mean image (central differences, one-sided at the border):
    up to sign and scale, the gradient of the squared difference with respect to the
    displacement at the identity, i.e. the direction of the first step of a demons or SSD
    optimiser. The factor 4 brings it to about the range of images in [0, 1]."""
    d = fixed - moving
    dims = tuple(range(2, moving.ndim))
    g = torch.stack(torch.gradient((fixed + moving) / 2, dim=dims), dim=1)[:, :, 0]
    return torch.cat([d, 4.0 * d * g], dim=1)


def _box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window``-wide box around each voxel (narrowed, odd, along shorter axes)."""
    dims = x.ndim - 2
    for axis, n in enumerate(x.shape[2:]):  # separable: one axis at a time
        k = min(window, n - 1 + n % 2)
        kernel = [k if a == axis else 1 for a in range(dims)]
        pad = [k // 2 if a == axis else 0 for a in range(dims)]
        x = _AVG_POOL[dims](x, kernel, 1, pad, count_include_pad=False)
    return x


def local_normalise(x: torch.Tensor, window: int, floor: float = 0.05) -> torch.Tensor:
    """``x`` at zero mean and unit spread in a ``window``-wide box around each voxel, the spread
    floored at ``floor`` (for images in [0, 1]) so flat regions stay flat rather than amplify
    noise: smooth intensity changes (bias field, gamma, contrast) cancel, as in local NCC."""
    mean = _box_filter(x, window)
    spread = (_box_filter(x * x, window) - mean * mean).clamp_min(0).sqrt()
    return (x - mean) / (spread + floor)


def local_flow(
    moving: torch.Tensor, fixed: torch.Tensor, window: int = 9, max_disp: float = 4.0
) -> torch.Tensor:
    """``(B, D + 1, *spatial)``: the Lucas-Kanade estimate of the displacement ``u`` (voxels,
    ``warp(moving, u) ~ fixed``) from a ``window``-wide box around each voxel, and the local
    gradient strength ``sqrt(trace G)``.

    Each image is first normalised in the same box (:func:`local_normalise`), so smooth
    intensity changes between the two (bias field, gamma, contrast) do not read as motion. Per voxel it then solves
    ``(G + eps I) u = b`` with ``G = <g g^T>`` and ``b = <g (fixed - moving)>`` over the box,
    ``g`` the gradient of the mean image; ``eps`` (5 % of ``trace G / D`` plus 1e-6) damps
    directions without texture (the aperture problem). Estimates are clipped to ``max_disp``."""
    dims = moving.ndim - 2
    moving, fixed = local_normalise(moving, window), local_normalise(fixed, window)
    mean = (fixed + moving) / 2
    g = torch.cat(
        [
            torch.gradient(mean, dim=a)[0] if n > 1 else 0 * mean
            for a, n in enumerate(mean.shape[2:], 2)
        ],
        dim=1,
    )
    d = fixed - moving
    rows, cols = torch.triu_indices(dims, dims)
    products = _box_filter(torch.cat([g[:, rows] * g[:, cols], g * d], dim=1), window)
    n = len(rows)
    G = products.new_zeros((products.shape[0], *products.shape[2:], dims, dims))  # channels last
    G[..., rows, cols] = products[:, :n].movedim(1, -1)
    G[..., cols, rows] = products[:, :n].movedim(1, -1)
    b = products[:, n:].movedim(1, -1)[..., None]
    trace = G.diagonal(dim1=-2, dim2=-1).sum(-1)
    eps = (0.05 * trace / dims + 1e-6)[..., None, None]
    eye = torch.eye(dims, dtype=G.dtype, device=G.device)
    u = torch.linalg.solve(G + eps * eye, b)[..., 0]
    u = u.movedim(-1, 1).clamp(-max_disp, max_disp)
    return torch.cat([u, trace.sqrt()[:, None]], dim=1)


LOCAL_FLOW_SCALES = (1, 2, 4)


def _multiscale_local_flow(x: torch.Tensor, shrink: int) -> torch.Tensor:
    """:func:`local_flow` of ``x = (moving, fixed)`` at full resolution and pooled by 2 and 4,
    each brought to the resolution of ``x`` pooled by ``shrink`` (displacements in those voxels)."""
    dims = x.ndim - 2
    out = []
    for scale in LOCAL_FLOW_SCALES:
        xs = _AVG_POOL[dims](x, scale) if scale > 1 else x
        lf = local_flow(xs[:, :1], xs[:, 1:])
        lf = torch.cat([lf[:, :dims] * (scale / shrink), lf[:, dims:]], dim=1)
        if scale < shrink:
            lf = _AVG_POOL[dims](lf, shrink // scale)
        elif scale > shrink:
            lf = F.interpolate(lf, scale_factor=scale // shrink, mode=interp_mode(dims))
        out.append(lf)
    return torch.cat(out, dim=1)


class RegistrationNet(nn.Module):
    """VoxelMorph-style U-Net: ``forward(moving, fixed)`` returns a displacement ``(B, D, *spatial)``
    in voxels (channel i along tensor axis i). The last conv starts near zero (N(0, 1e-5)), so an
    untrained net predicts almost the identity. With ``integration_steps > 0`` the output is a
    stationary velocity integrated by scaling and squaring (diffeomorphic mode). With ``shrink``
    > 1 the U-Net runs on the inputs average-pooled by ``shrink`` and its field is upsampled
    (cell-centred, vectors times ``shrink``) to the input grid. Inputs of any size: they are
    extended by their edge values to a multiple of ``shrink x 2^stages`` and the field cropped.
    """

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        if cfg.shrink < 1:
            raise ValueError(f"NetworkConfig: shrink must be >= 1, got {cfg.shrink}")
        if cfg.local_flow and cfg.shrink & (cfg.shrink - 1):
            raise ValueError(
                f"NetworkConfig: local_flow needs shrink a power of 2, got {cfg.shrink}"
            )
        if cfg.local_flow and cfg.shrink * 2 ** len(cfg.channels) < max(LOCAL_FLOW_SCALES):
            raise ValueError(
                f"NetworkConfig: local_flow needs shrink x 2^stages >= {max(LOCAL_FLOW_SCALES)}"
            )
        self.spatial_dims = cfg.spatial_dims
        self.integration_steps = cfg.integration_steps
        self.shrink = cfg.shrink
        self.flow_features = cfg.flow_features
        self.local_flow = cfg.local_flow
        inputs = 2 + (1 + cfg.spatial_dims if cfg.flow_features else 0)
        inputs += len(LOCAL_FLOW_SCALES) * (1 + cfg.spatial_dims) if cfg.local_flow else 0
        self.backbone = UNetBackbone(
            cfg.spatial_dims, inputs, cfg.channels, True, cfg.bnorm, cfg.dropout
        )
        width = cfg.head_channels or self.backbone.out_channels
        self.head = _head(cfg.spatial_dims, self.backbone.out_channels, width, cfg.spatial_dims, 3)
        last = self.head[-1]
        nn.init.normal_(last.weight, 0.0, 1e-5)
        nn.init.zeros_(last.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if moving.shape != fixed.shape or moving.shape[1] != 1:
            raise ValueError(
                "RegistrationNet: moving and fixed must both be (B, 1, *spatial), "
                f"got {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        if moving.ndim - 2 != self.spatial_dims:
            raise ValueError(
                f"RegistrationNet: this is a {self.spatial_dims}D model, got a {moving.ndim - 2}D input"
            )
        x = torch.cat([moving, fixed], dim=1)
        size = x.shape[2:]
        stride = self.shrink * 2 ** len(self.backbone.encoder)
        pad = [(-n) % stride for n in size]
        if any(pad):  # edge values up to the next multiple of the net's stride; cropped below
            x = F.pad(x, [v for p in reversed(pad) for v in (0, p)], mode="replicate")
        lf = _multiscale_local_flow(x, self.shrink) if self.local_flow else None
        if self.shrink > 1:
            x = _AVG_POOL[self.spatial_dims](x, self.shrink)
        if self.flow_features:
            x = torch.cat([x, flow_features(x[:, :1], x[:, 1:2])], dim=1)
        if lf is not None:
            x = torch.cat([x, lf], dim=1)
        flow = self.head(self.backbone(x)[0])
        if self.integration_steps:
            flow = integrate_velocity(flow.float(), self.integration_steps)
        if self.shrink > 1:
            mode = interp_mode(self.spatial_dims)
            flow = self.shrink * F.interpolate(flow, scale_factor=self.shrink, mode=mode)
        if any(pad):
            flow = flow[(slice(None), slice(None), *(slice(0, n) for n in size))]
        return flow.float()


def build_network(cfg: NetworkConfig | dict) -> nn.Module:
    """Build the network a config describes."""
    if isinstance(cfg, dict):
        cfg = NetworkConfig.from_dict(cfg)
    _check_dims("build_network()", cfg.spatial_dims)
    classes = {
        "segmentation": SegmentationNet,
        "autoencoder": AutoEncoder,
        "registration": RegistrationNet,
    }
    if cfg.kind not in classes:
        raise ValueError(
            f"build_network(): kind must be one of {sorted(classes)}, got {cfg.kind!r}"
        )
    return classes[cfg.kind](cfg)
