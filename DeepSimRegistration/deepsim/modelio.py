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
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .api import LossSpec, ModelFileError, ModelInfo, Preprocessing
from .config_checks import ConfigError, check_model_payload, load_torch_file
from .networks import NetworkConfig, build_network

__all__ = [
    "FORMAT",
    "ModelFileError",
    "LoadedModel",
    "save_model",
    "read_model_file",
    "load_model",
]

FORMAT = "deepsim"
VERSION = 1


@dataclass
class LoadedModel:
    """Networks rebuilt from a model file, in eval mode, with the file's settings typed."""

    name: str
    path: Path | None
    spatial_dims: int
    networks: dict[str, nn.Module]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    loss: LossSpec = field(default_factory=LossSpec)
    info: ModelInfo = field(default_factory=ModelInfo)
    config: dict = field(default_factory=dict)

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
    try:
        settings = (
            Preprocessing.from_dict(config.get("preprocessing")),
            LossSpec.from_dict(config.get("loss")),
            ModelInfo.from_dict(config.get("info")),
        )
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{path}: malformed settings ({err})") from None
    return LoadedModel(config.get("name", path.stem), path, dims, networks, *settings, config)
