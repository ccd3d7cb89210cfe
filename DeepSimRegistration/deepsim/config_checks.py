"""Configurations checked before any work: training configs, evaluation data configs, and the
model and checkpoint files PyTorch loads. Every error is one ``ValueError`` line naming the file
and the key (``optim.lr must be a positive number, got "fast" (a string)``), never a traceback or
PyTorch's advice to load with ``weights_only=False``."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = [
    "SPLITS",
    "ConfigError",
    "read_json_config",
    "check_training_config",
    "check_data_config",
    "load_torch_file",
    "check_model_payload",
]

SPLITS = ("train", "val", "test")
TASKS = ("segmentation", "autoencoder", "registration")


class ConfigError(ValueError):
    """A configuration, model or checkpoint file that cannot be used as it is."""


def _kind(value) -> str:
    """What a JSON value is, in the user's words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(
        type(value), type(value).__name__
    )


class _Checker:
    """Checks keys of one config file; errors read ``<file>: <key> must be ..., got ...``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, need: str, value) -> None:
        shown = json.dumps(value, default=repr)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ConfigError(f"{self.source}: {key} must be {need}, got {shown} ({_kind(value)})")

    def obj(self, cfg: dict, key: str, required: bool = False) -> dict:
        if key not in cfg:
            if required:
                raise ConfigError(f"{self.source} lacks the required entry {key!r}")
            return {}
        if not isinstance(cfg[key], dict):
            self.fail(key, "an object ({...})", cfg[key])
        return cfg[key]

    def integer(self, cfg: dict, key: str, prefix: str = "", low: int = 0) -> None:
        if key in cfg:
            v = cfg[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                self.fail(prefix + key, f"a whole number >= {low}", v)

    def number(self, cfg: dict, key: str, prefix: str = "", positive=True, below=None) -> None:
        if key in cfg:
            v = cfg[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > 0 if positive else v >= 0) and (below is None or v < below)
            if not ok:
                need = "a positive number" if positive else "a number >= 0"
                self.fail(prefix + key, need + (f" below {below}" if below else ""), v)

    def choice(self, cfg: dict, key: str, options, prefix: str = "") -> None:
        if key in cfg and cfg[key] not in options:
            self.fail(prefix + key, "one of " + ", ".join(map(str, options)), cfg[key])


def read_json_config(path: str | Path, what: str) -> dict:
    """A JSON object from ``path``, or a one-line error naming the file."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text (JSON) file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} {path} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object ({{...}}), not {_kind(cfg)}")
    return cfg


def check_data_config(data, source: str) -> None:
    """The ``data`` entry of a training or evaluation config."""
    c = _Checker(source)
    if not isinstance(data, dict):
        c.fail("data", "an object ({...})", data)
    if not isinstance(data.get("kind"), str):  # which kinds exist: the sources' registry
        c.fail("data.kind", "the name of a data kind (a string)", data.get("kind"))
    if data["kind"] == "folder" and not isinstance(data.get("root"), str):
        c.fail("data.root", "a folder path (string)", data.get("root"))
    if "shape" in data and (
        not isinstance(data["shape"], list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in data["shape"])
    ):
        c.fail("data.shape", "a list of positive whole numbers", data["shape"])


def check_training_config(cfg: dict, path: str | Path) -> None:
    """Types and ranges of a training config's entries, before anything is built."""
    source = f"training config {path}"
    c = _Checker(source)
    for key in ("task", "spatial_dims", "network", "data"):
        if key not in cfg:
            raise ConfigError(f"{source} lacks the required entry {key!r}")
    c.choice(cfg, "task", TASKS)
    c.choice(cfg, "spatial_dims", (2, 3))
    if isinstance(cfg["spatial_dims"], bool):
        c.fail("spatial_dims", "2 or 3", cfg["spatial_dims"])
    net = c.obj(cfg, "network", required=True)
    if "channels" in net and (
        not isinstance(net["channels"], list)
        or not net["channels"]
        or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in net["channels"]
        )
    ):
        c.fail("network.channels", "a list of positive whole numbers", net["channels"])
    c.integer(net, "n_classes", "network.", low=2)
    c.integer(net, "integration_steps", "network.", low=0)
    c.integer(net, "stem_channels", "network.", low=0)
    c.integer(net, "input_window", "network.", low=0)
    c.integer(net, "shrink", "network.", low=1)
    c.number(net, "dropout", "network.", positive=False, below=1)
    for key in ("bnorm", "flow_features", "local_flow"):
        if key in net and not isinstance(net[key], bool):
            c.fail(f"network.{key}", "true or false", net[key])
    check_data_config(cfg["data"], source)
    optim = c.obj(cfg, "optim")
    c.number(optim, "lr", "optim.")
    for key in ("steps", "batch_size", "val_every", "val_pairs", "checkpoint_every"):
        c.integer(optim, key, "optim.", low=1)
    c.integer(optim, "plateau_patience", "optim.", low=0)
    c.number(optim, "plateau_factor", "optim.", below=1)
    c.number(optim, "grad_clip", "optim.", positive=False)
    if "amp" in optim and not isinstance(optim["amp"], bool):
        c.fail("optim.amp", "true or false", optim["amp"])
    if "init" in optim and not isinstance(optim["init"], str):
        c.fail("optim.init", "a model file path (string)", optim["init"])
    loss = c.obj(cfg, "loss")
    c.number(loss, "lambda", "loss.", positive=False)
    c.number(loss, "field_weight", "loss.", positive=False)
    if "similarity" in loss and not isinstance(loss["similarity"], str):
        c.fail("loss.similarity", "a string", loss["similarity"])
    pre = c.obj(cfg, "preprocessing")
    if "spacing" in pre:
        spacing = pre["spacing"] if isinstance(pre["spacing"], list) else [pre["spacing"]]
        for v in spacing:
            c.number({"spacing": v}, "spacing", "preprocessing.")
    c.integer(pre, "multiple", "preprocessing.", low=1)
    c.obj(cfg, "info")
    c.integer(cfg, "seed")
    for key in ("name", "out"):
        if key in cfg and not isinstance(cfg[key], str):
            c.fail(key, "a string", cfg[key])


def load_torch_file(path: str | Path, what: str, kind: str = "PyTorch file"):
    """``torch.load(path, weights_only=True)`` with every failure turned into one line naming the
    file: empty, truncated, not a ``kind``, or holding something other than tensors."""
    import pickle
    import warnings
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise ConfigError(f"cannot load {what} {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol notices
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises a dozen types on damaged files
        is_zip = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            zip_start = f.read(2) == b"PK"
        if isinstance(err, pickle.UnpicklingError) and is_zip:
            reason = "it holds objects other than tensors and plain values, which are never loaded"
        elif zip_start and not is_zip:
            reason = "it is truncated (an interrupted write or copy?)"
        else:
            reason = f"it is corrupt or not a {kind}"
    raise ConfigError(f"cannot load {what} {path}: {reason}")


def check_model_payload(payload, path: str | Path, fmt: str, version: int) -> tuple[dict, dict]:
    """``(config, state_dicts)`` of a loaded model file, its structure checked (the settings'
    values are checked by :mod:`deepsim.api`'s typed settings when the model is built)."""
    import numpy as np
    import torch

    source = f"model file {path}"
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ConfigError(f"{path} is not a deepsim model file (no 'format': '{fmt}' entry)")
    v = payload.get("version", 0)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{source}: malformed format version {v!r}")
    if v > version:
        raise ConfigError(f"{path} has model format version {v}; this deepsim reads {version}")
    try:
        config = json.loads(payload["config"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{source}: malformed, its 'config' entry is not a JSON text") from None
    states = payload.get("networks")
    c = _Checker(source)
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: malformed, its config is {_kind(config)}, not an object")
    if not isinstance(states, dict) or not states:
        raise ConfigError(f"{source}: malformed, it holds no networks")
    net_cfgs = c.obj(config, "networks", required=True)
    for name, state in states.items():
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in state.items()
        ):
            raise ConfigError(f"{source}: malformed, network {name!r} is not a set of weights")
        if not isinstance(net_cfgs.get(name), dict):
            raise ConfigError(f"{source}: malformed, network {name!r} has no config")
    c.choice(config, "spatial_dims", (2, 3))
    if "spatial_dims" not in config or isinstance(config["spatial_dims"], bool):
        c.fail("spatial_dims", "2 or 3", config.get("spatial_dims"))
    pre = c.obj(config, "preprocessing")  # its values: deepsim.api.Preprocessing
    if pre.get("orientation") is not None:
        d = config["spatial_dims"]
        try:
            m = np.asarray(pre["orientation"], np.float64)
            ok = m.shape == (d, d) and np.all(np.isfinite(m)) and abs(np.linalg.det(m)) > 1e-6
        except (TypeError, ValueError):
            ok = False
        if not ok:
            c.fail(
                "preprocessing.orientation", f"a non-singular {d}x{d} matrix", pre["orientation"]
            )
    c.obj(config, "info")
    c.obj(config, "loss")
    return config, states
