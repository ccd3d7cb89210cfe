"""Model files: network weights plus the config that rebuilds networks and preprocessing.

A model file is a ``torch.save``d dict of plain types only, loaded with ``weights_only=True``, so a
model file cannot run code when it is opened::

    {"format": "deepsim", "version": 1, "config": "<json>", "networks": {name: state_dict}}

``config`` holds ``networks`` (name -> :class:`~deepsim.networks.NetworkConfig` dict), ``spatial_dims``,
``preprocessing``, ``loss``, ``metrics`` and free ``info``. A registration model has the networks
``registration`` and ``extractor`` (the DeepSim feature extractor, used for heatmaps and instance
optimisation); a feature-extractor model has ``extractor`` only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config_checks import ConfigError, check_model_payload, load_torch_file
from .networks import NetworkConfig, build_network

__all__ = [
    "FORMAT",
    "ModelFileError",
    "LoadedModel",
    "save_model",
    "read_model_file",
    "load_model",
    "models_dir",
    "shipped_models",
    "resolve_model",
    "DEFAULT_PREPROCESSING",
]

log = logging.getLogger(__name__)

FORMAT = "deepsim"
VERSION = 1

DEFAULT_PREPROCESSING = {
    "spacing": 1.0,  # mm, model grid voxel size (scalar or per tensor axis)
    "multiple": 8,  # model grid size multiple (2 ** number of stages)
    "orientation": None,  # LPS direction of the model axes; None = identity in tensor order
    "lower_percentile": 0.5,  # intensity normalisation to [0, 1]
    "upper_percentile": 99.5,
    "max_voxels": 8_000_000,
}


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, of another format or for another dimension."""


@dataclass
class LoadedModel:
    """Networks rebuilt from a model file, in eval mode."""

    name: str
    path: Path | None
    spatial_dims: int
    networks: dict[str, nn.Module]
    config: dict = field(default_factory=dict)

    @property
    def preprocessing(self) -> dict:
        return {**DEFAULT_PREPROCESSING, **self.config.get("preprocessing", {})}

    @property
    def registration(self) -> nn.Module:
        if "registration" not in self.networks:
            raise ModelFileError(f"model {self.name!r} has no registration network")
        return self.networks["registration"]

    @property
    def extractor(self) -> nn.Module | None:
        return self.networks.get("extractor")

    def to(self, device) -> "LoadedModel":
        for net in self.networks.values():
            net.to(device)
        return self


def save_model(path: str | Path, networks: dict[str, nn.Module], config: dict) -> None:
    """Write a model file. ``config["networks"]`` must describe every network in ``networks``."""
    missing = set(networks) - set(config.get("networks", {}))
    if missing:
        raise ValueError(f"save_model(): config lacks network configs for {sorted(missing)}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(config, sort_keys=True),
        "networks": {
            k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in networks.items()
        },
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_model_file(path: str | Path) -> tuple[dict, dict]:
    """``(config, state_dicts)`` of a model file, checked, without building networks."""
    try:
        return check_model_payload(
            load_torch_file(path, "model file", "deepsim model"), path, FORMAT, VERSION
        )
    except ConfigError as err:
        raise ModelFileError(str(err)) from None


def load_model(path: str | Path, device="cpu", spatial_dims: int | None = None) -> LoadedModel:
    """Rebuild the networks of a model file (``strict`` state-dict loading), in eval mode.

    ``spatial_dims``: when given, a model of another dimension is refused with a clear error.
    """
    path = Path(path)
    config, states = read_model_file(path)
    dims = int(config.get("spatial_dims", 0))
    if spatial_dims is not None and dims != spatial_dims:
        raise ModelFileError(
            f"model {path.name} is a {dims}D model but the images are {spatial_dims}D; "
            f"choose a {spatial_dims}D model (see 'deepsim models')"
        )
    networks = {}
    for name, state in states.items():
        try:
            cfg = NetworkConfig.from_dict(config["networks"][name])
            net = build_network(cfg)
            net.load_state_dict(state, strict=True)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise ModelFileError(
                f"{path}: network {name!r} does not match its config ({err})"
            ) from err
        networks[name] = net.to(device).eval()
    return LoadedModel(config.get("name", path.stem), path, dims, networks, config)


def models_dir() -> Path:
    """Folder of the shipped models (``DEEPSIM_MODELS`` overrides it)."""
    env = os.environ.get("DEEPSIM_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "Resources" / "Models"


def shipped_models(skipped: list[str] | None = None) -> dict[str, dict]:
    """Name -> ``{"path", "spatial_dims", "description", "default"}`` of the shipped models. A file
    that cannot be read is left out (one bad file never hides the others), its reason appended to
    ``skipped`` when given, else logged."""
    out = {}
    folder = models_dir()
    for path in sorted(folder.glob("*.pt")):
        try:
            config, _ = read_model_file(path)
        except ModelFileError as err:
            if skipped is None:
                log.warning("skipping %s: %s", path.name, err)
            else:
                skipped.append(str(err))
            continue
        if "registration" not in config.get("networks", {}):
            continue
        out[path.stem] = {
            "path": path,
            "spatial_dims": int(config.get("spatial_dims", 0)),
            "description": config.get("info", {}).get("description", ""),
            "default": bool(config.get("info", {}).get("default", False)),
            "default_io_steps": int(config.get("info", {}).get("default_io_steps", 0)),
        }
    return out


def resolve_model(name_or_path: str | None, spatial_dims: int) -> Path:
    """A model file path from a shipped model name, a path, or ``None`` (the default shipped model
    for ``spatial_dims``)."""
    models = shipped_models()
    if name_or_path is None:
        candidates = [m for m in models.values() if m["spatial_dims"] == spatial_dims]
        if not candidates:
            raise ModelFileError(
                f"no shipped {spatial_dims}D model in {models_dir()}; pass --model PATH"
            )
        defaults = [m for m in candidates if m["default"]] or candidates
        return defaults[0]["path"]
    if name_or_path in models:
        return models[name_or_path]["path"]
    path = Path(name_or_path)
    if path.suffix or path.exists():
        return path
    raise ModelFileError(
        f"unknown model {name_or_path!r}: not a file and not a shipped model "
        f"(shipped: {', '.join(sorted(models)) or 'none'})"
    )
