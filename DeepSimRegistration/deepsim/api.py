"""The torch-free surface of deepsim: settings, results' summary, cancellation, the model catalogue.

Everything here imports only the standard library, so a caller that has no torch yet (the Slicer
panel before PyTorch is installed, a job scheduler) can list models, build options and recognise a
cancellation. Settings that travel inside model files are typed dataclasses, validated once when a
model or a config is read (:meth:`Preprocessing.from_dict`, :meth:`LossSpec.from_dict`,
:meth:`ModelInfo.from_dict`); nothing downstream reads them by string key.

The catalogue is one JSON file beside each shipped model (``models/NAME.json``, written by
``scripts/ship_model.py`` from the model file's config, checked against it by the tests).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .presets import DEFAULT_PRESET

__all__ = [
    "Cancelled",
    "ModelFileError",
    "ProgressFn",
    "CancelFn",
    "Preprocessing",
    "LossSpec",
    "ModelInfo",
    "RegistrationOptions",
    "Summary",
    "ModelEntry",
    "models_dir",
    "catalogue",
    "catalogue_entry",
    "default_model",
    "resolve_model",
    "LOSS_SIMILARITIES",
]

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]

LOSS_SIMILARITIES = ("deepsim", "ncc", "mse", "ncc_sup", "vgg")


class Cancelled(RuntimeError):
    """Raised when ``should_cancel()`` returns True; nothing has been written."""


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, of another format or for another dimension."""


def _known(cls, d: Any, what: str) -> dict:
    """``d`` as a dict holding only fields of dataclass ``cls`` (an unknown key is an error)."""
    _known_any(d, what)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {', '.join(unknown)}")
    return d


def _known_any(d: Any, what: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be an object, got {type(d).__name__}")
    return d


def _positive(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return x


@dataclass(frozen=True)
class Preprocessing:
    """How images are put on a model's grid. ``spacing``: model voxel size in mm (scalar or one per
    tensor axis); ``multiple``: grid sizes are multiples of it (2 ** network stages);
    ``orientation``: LPS directions of the model axes (None = identity in tensor order);
    intensities are normalised to [0, 1] between the two percentiles."""

    spacing: float | tuple[float, ...] = 1.0
    multiple: int = 8
    orientation: tuple[tuple[float, ...], ...] | None = None
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    max_voxels: int = 8_000_000

    @classmethod
    def from_dict(cls, d: dict | None) -> Preprocessing:
        d = _known(cls, d or {}, "preprocessing")
        spacing = d.get("spacing", cls.spacing)
        if isinstance(spacing, (list, tuple)):
            spacing = tuple(_positive(s, "preprocessing.spacing") for s in spacing)
        else:
            spacing = _positive(spacing, "preprocessing.spacing")
        orientation = d.get("orientation")
        if orientation is not None:
            orientation = tuple(tuple(float(v) for v in row) for row in orientation)
        lo = float(d.get("lower_percentile", cls.lower_percentile))
        hi = float(d.get("upper_percentile", cls.upper_percentile))
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"preprocessing percentiles must satisfy 0 <= {lo} < {hi} <= 100")
        return cls(
            spacing,
            int(_positive(d.get("multiple", cls.multiple), "preprocessing.multiple")),
            orientation,
            lo,
            hi,
            int(_positive(d.get("max_voxels", cls.max_voxels), "preprocessing.max_voxels")),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossSpec:
    """The similarity a model was trained with, reused by instance optimisation and heatmaps.
    ``lam``: weight of the diffusion regulariser (``lambda`` in files); ``levels``: the extractor's
    feature levels DeepSim averages (None = all); ``window``: NCC window; ``n_classes``: labels
    of NCC_sup; ``field_weight``: training only, weight of the mean squared endpoint error (voxels)
    to the ground-truth displacement of synthetic pairs; ``extractor``: training-time path of the
    extractor model file (not used at run time: the extractor ships inside the model);
    ``target``: segmentation extractors only, what the net segments: the label map (``labels``,
    the default) or :func:`deepsim.training.synth.boundary_bands` of it (``boundaries``, for
    label maps whose ids mean nothing, such as random shapes)."""

    similarity: str = "deepsim"
    lam: float = 1.0
    levels: tuple[int, ...] | None = None
    level_weights: tuple[float, ...] | None = None
    window: int = 9
    n_classes: int | None = None
    field_weight: float = 0.0
    extractor: str | None = None
    vgg_weights: str | None = None
    target: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> LossSpec:
        d = dict(d or {})
        if "lambda" in d:
            d["lam"] = d.pop("lambda")
        d = _known(cls, d, "loss")
        name = d.get("similarity", cls.similarity)
        if name not in LOSS_SIMILARITIES:
            raise ValueError(
                f"loss.similarity must be one of {', '.join(LOSS_SIMILARITIES)}; got {name!r}"
            )
        lam = float(d.get("lam", cls.lam))
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"loss.lambda must be a non-negative number, got {lam!r}")
        field_weight = float(d.get("field_weight", cls.field_weight))
        if not (math.isfinite(field_weight) and field_weight >= 0):
            raise ValueError(
                f"loss.field_weight must be a non-negative number, got {field_weight!r}"
            )
        target = d.get("target")
        if target not in (None, "labels", "boundaries"):
            raise ValueError(f"loss.target must be labels or boundaries; got {target!r}")
        levels = d.get("levels")
        weights = d.get("level_weights")
        return cls(
            name,
            lam,
            None if levels is None else tuple(int(v) for v in levels),
            None if weights is None else tuple(float(v) for v in weights),
            int(_positive(d.get("window", cls.window), "loss.window")),
            None if d.get("n_classes") is None else int(d["n_classes"]),
            field_weight,
            d.get("extractor"),
            d.get("vgg_weights"),
            target,
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["lambda"] = out.pop("lam")
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class ModelInfo:
    """What a model says about itself. ``default``: the default model of its dimension;
    ``extra``: free provenance (data, training log, card text, hardware) kept for the model card.
    The engine's settings come from :mod:`deepsim.presets`, not from the model file (older files'
    ``default_io_steps`` / ``default_io_lr`` are ignored)."""

    description: str = ""
    default: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelInfo:
        d = dict(_known_any(d or {}, "info"))
        for unused in ("default_io_steps", "default_io_lr"):
            d.pop(unused, None)
        return cls(str(d.pop("description", "")), bool(d.pop("default", False)), d)

    def to_dict(self) -> dict:
        return {**self.extra, "description": self.description, "default": self.default}


@dataclass
class RegistrationOptions:
    """``device``: auto|cpu|cuda. ``affine``: classical pre-alignment (``rigid``: rotation and
    translation only). ``preset``: the instance-optimisation engine's quality preset, ``fast``,
    ``recommended`` or ``best`` (:data:`deepsim.presets.PRESETS`). ``similarity``: override the
    model's default similarity (``"mind"``, ``"ncc"``, ``"ncc+3*mind"``, ...). ``network``: False
    skips the network (training-free: the engine starts from the identity). ``io_steps``: None =
    the preset; 0 = no instance optimisation (network only); N = one level of N steps on the
    model grid, step ``io_lr`` voxels, instead of the preset's levels. ``model_spacing``:
    override the model grid spacing in mm (coarser = faster, less memory). ``heatmaps`` /
    ``warped``: compute those outputs. ``deepsim_judge``: after the engine, keep the network's
    field instead of the engine's when the model's own DeepSim similarity rates it higher (the
    engine optimises a different similarity and cannot tell when it made the field worse); None =
    the model's default (:data:`deepsim.presets.DEEPSIM_JUDGE`)."""

    device: str = "auto"
    affine: bool = True
    rigid: bool = False
    preset: str = DEFAULT_PRESET
    similarity: str | None = None
    network: bool = True
    io_steps: int | None = None
    io_lr: float | None = None
    model_spacing: float | None = None
    heatmaps: bool = True
    warped: bool = True
    deepsim_judge: bool | None = None


@dataclass
class Summary:
    """The numbers of one registration, as ``summary.json`` stores them. Similarities are the
    means of the heatmaps (None when heatmaps were off); Dice values only with both label maps."""

    runtime_s: float
    device: str
    model: str | None
    model_grid_shape: list[int]
    model_grid_spacing_mm: list[float]
    affine: list[list[float]]
    folding_percent: float
    std_log_jacobian: float
    jacobian_min: float
    jacobian_max: float
    io_steps: int
    timings_s: dict[str, float] = field(default_factory=dict)
    similarity_ncc_before: float | None = None
    similarity_ncc_after: float | None = None
    similarity_deepsim_before: float | None = None
    similarity_deepsim_after: float | None = None
    dice_before: float | None = None
    dice_affine: float | None = None
    dice_after: float | None = None
    dice_per_label_after: dict[str, float] | None = None
    preset: str | None = None
    engine: dict | None = None
    engine_steps: list[int] | None = None
    engine_kept: str | None = None
    engine_loss: dict[str, float] | None = None
    mask: str | None = None
    deepsim_judge: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """The JSON form: fields that are None are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# ------------------------------------------------------------------------------------------------
# the model catalogue


@dataclass(frozen=True)
class ModelEntry:
    """One shipped model, as its catalogue file describes it (no torch needed)."""

    name: str
    path: Path
    spatial_dims: int
    kind: str
    description: str
    default: bool


def models_dir() -> Path:
    """Folder of the shipped models, package data of deepsim (``DEEPSIM_MODELS`` overrides it)."""
    env = os.environ.get("DEEPSIM_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent / "models"


def catalogue_entry(config: dict) -> dict:
    """The catalogue JSON of a model file's config (``scripts/ship_model.py`` writes it)."""
    info = ModelInfo.from_dict(config.get("info"))
    nets = config.get("networks", {})
    return {
        "name": config["name"],
        "spatial_dims": int(config["spatial_dims"]),
        "kind": "registration" if "registration" in nets else "extractor",
        "description": info.description,
        "default": info.default,
    }


def catalogue(
    folder: str | Path | None = None, skipped: list[str] | None = None
) -> dict[str, ModelEntry]:
    """Name -> :class:`ModelEntry` of the registration models in ``folder`` (default
    :func:`models_dir`), read from the ``NAME.json`` beside each ``NAME.pt``. A model whose catalogue file is missing,
    unreadable or malformed is skipped, so one bad file breaks no other model; ``skipped``, when
    given, collects a line naming each."""
    folder = Path(folder) if folder is not None else models_dir()
    out = {}
    for model in sorted(folder.glob("*.pt")):
        meta = model.with_suffix(".json")
        try:
            d = json.loads(meta.read_text())
            entry = ModelEntry(
                str(d["name"]),
                model,
                int(d["spatial_dims"]),
                str(d["kind"]),
                str(d.get("description", "")),
                bool(d.get("default", False)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            if skipped is not None:
                reason = "missing" if isinstance(err, FileNotFoundError) else "malformed"
                skipped.append(f"{model.name}: its catalogue file {meta.name} is {reason}")
            continue
        if entry.kind == "registration" and entry.spatial_dims in (2, 3):
            out[model.stem] = entry
    return out


def default_model(spatial_dims: int, folder: str | Path | None = None) -> ModelEntry:
    """The default shipped model for ``spatial_dims`` (the one marked default, else the first)."""
    candidates = [m for m in catalogue(folder).values() if m.spatial_dims == spatial_dims]
    if not candidates:
        raise ModelFileError(
            f"no shipped {spatial_dims}D model in {folder or models_dir()}; choose a model file"
        )
    return next((m for m in candidates if m.default), candidates[0])


def resolve_model(name_or_path: str | None, spatial_dims: int) -> Path:
    """A model file path from a shipped model name, a path, or ``None`` (the default shipped model
    for ``spatial_dims``)."""
    if name_or_path is None:
        return default_model(spatial_dims).path
    models = catalogue()
    if name_or_path in models:
        return models[name_or_path].path
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return path
    raise ModelFileError(
        f"unknown model {name_or_path!r}: not a file and not a shipped model "
        f"(shipped: {', '.join(sorted(models)) or 'none'})"
    )
