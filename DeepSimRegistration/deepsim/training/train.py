"""Training of feature extractors and registration networks from JSON configs.

One loop for the three tasks: ``segmentation`` (DeepSim_seg extractor, cross-entropy + soft Dice on
the labels, or on their boundary bands with ``loss.target`` ``boundaries``),
``autoencoder`` (DeepSim_ae extractor, MSE reconstruction) and ``registration`` (similarity +
lambda * diffusion, plus ``loss.field_weight`` times the squared endpoint error to a synthetic
pair's known displacement). Adam, plateau learning-rate decay on the validation score, model
selection on validation Dice (registration) or loss (extractors), checkpoints that carry their
config, resume after interruption, seeded runs, and DistributedDataParallel under ``torchrun``
(NCCL on GPUs, gloo on CPU). The best model is written as a model file (:mod:`deepsim.modelio`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..api import LossSpec, Preprocessing
from ..config_checks import (
    ConfigError,
    check_training_config,
    load_torch_file,
    read_json_config,
)
from ..metrics import mean_foreground_dice
from ..modelio import LoadedModel, load_model, save_model
from ..networks import NetworkConfig, build_network
from ..progress import ProgressBar
from ..regularizers import diffusion
from ..similarity import build_similarity
from ..warp import warp
from .synth import boundary_bands

__all__ = [
    "train",
    "train_from_config",
    "load_config",
    "similarity_loss",
    "dice_ce_loss",
    "TrainOutcome",
]

log = logging.getLogger(__name__)

DEFAULT_OPTIM = {
    "lr": 1e-4,
    "steps": 1000,
    "batch_size": 1,
    "val_every": 100,
    "val_pairs": 8,
    "checkpoint_every": 50,
    "plateau_patience": 5,
    "plateau_factor": 0.1,
    "amp": True,
    "grad_clip": 0.0,
    "init": None,
}


def load_config(path: str | Path) -> dict:
    """A training config, its entries' types and ranges checked (:mod:`deepsim.config_checks`)."""
    cfg = read_json_config(path, "training config")
    check_training_config(cfg, path)
    cfg.setdefault("name", Path(path).stem)
    return cfg


@dataclass
class TrainOutcome:
    """``best``: validation metrics of the selected model; ``network``: the final network;
    ``start_step``: the step it resumed from (``step - start_step`` steps were trained)."""

    best: dict
    network: nn.Module
    step: int
    start_step: int = 0


def _dist() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else base / p


def similarity_loss(
    cfg: dict, spatial_dims: int, base: Path, device
) -> tuple[Callable, LoadedModel | None]:
    """``(loss_fn(warped, fixed, disp, batch), extractor model file)`` for the config's ``loss``
    (built by :func:`deepsim.similarity.build_similarity`); the extractor is returned for DeepSim,
    so a registration model file can carry it."""
    spec = LossSpec.from_dict(cfg)
    if spec.similarity == "vgg" and spatial_dims != 2:
        raise ValueError("the VGG similarity is 2D only")
    extractor = None
    if spec.similarity == "deepsim":
        if spec.extractor is None:
            raise ValueError("loss.extractor: the deepsim similarity needs an extractor model file")
        extractor = load_model(_resolve(spec.extractor, base), device)
    sim = build_similarity(spec, extractor.networks["extractor"] if extractor else None)
    if isinstance(sim, nn.Module):
        sim.to(device)
    if spec.similarity == "ncc_sup":
        return (lambda w, f, d, b: sim(w, f, d, b["moving_labels"], b["fixed_labels"])), extractor
    return (lambda w, f, d, b: sim(w, f)), extractor


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes present in the batch (the
    nnU-Net/MONAI ``DiceCE`` recipe): cross-entropy alone lets a net with mostly background voxels
    settle on predicting background. ``logits (B, K, *spatial)``, integer ``labels (B, *spatial)``."""
    ce = F.cross_entropy(logits, labels)
    prob = logits.softmax(1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(prob.dtype)
    dims = (0, *range(2, logits.ndim))
    inter, size = (prob * onehot).sum(dims), (prob + onehot).sum(dims)
    present = onehot.sum(dims)[1:] > 0
    if not present.any():
        return ce
    dice = (2 * inter[1:] + 1e-5) / (size[1:] + 1e-5)
    return ce + 1.0 - dice[present].mean()


def _batch(source, n: int, generator, device) -> dict:
    items = [source.sample(generator, device) for _ in range(n)]
    return {
        k: torch.cat([it[k] for it in items])
        for k in items[0]
        if k in ("fixed", "moving", "fixed_labels", "moving_labels", "disp")
    }


class _Task:
    """Loss and validation score of one task; ``score`` is maximised."""

    def __init__(self, cfg: dict, net: nn.Module, base: Path, device):
        self.kind = cfg["task"]
        self.net = net
        self.extractor = None
        spec = LossSpec.from_dict(cfg.get("loss"))
        self.lam, self.field_weight = spec.lam, spec.field_weight
        self.target = boundary_bands if spec.target == "boundaries" else (lambda labels: labels)
        if self.kind == "registration":
            self.sim, self.extractor = similarity_loss(
                cfg.get("loss", {}), cfg["spatial_dims"], base, device
            )

    def loss(self, model: nn.Module, b: dict) -> torch.Tensor:
        if self.kind == "segmentation":
            x = torch.cat([b["fixed"], b["moving"]])
            y = self.target(torch.cat([b["fixed_labels"], b["moving_labels"]]))[:, 0]
            return dice_ce_loss(model(x).float(), y)
        if self.kind == "autoencoder":
            x = torch.cat([b["fixed"], b["moving"]])
            return F.mse_loss(model(x).float(), self.net.prepare(x))  # model may be DDP-wrapped
        disp = model(b["moving"], b["fixed"])
        warped = warp(b["moving"], disp)
        loss = self.sim(warped, b["fixed"], disp, b) + self.lam * diffusion(disp)
        if self.field_weight:
            if "disp" not in b:
                raise ValueError(
                    "loss.field_weight needs pairs with a known displacement (synthetic data)"
                )
            loss = loss + self.field_weight * (disp - b["disp"]).square().sum(1).mean()
        return loss

    @torch.no_grad()
    def validate(self, source, n: int, device) -> dict:
        self.net.eval()
        losses, dices, identity = [], [], []
        for i in range(n):
            b = source.pair(i, device)
            losses.append(float(self.loss(self.net, b)))
            if self.kind == "registration":
                disp = self.net(b["moving"], b["fixed"])
                warped = warp(b["moving_labels"].float(), disp, mode="nearest")
                fl = b["fixed_labels"][0, 0].cpu().numpy()
                dices.append(mean_foreground_dice(fl, warped[0, 0].long().cpu().numpy()))
                identity.append(mean_foreground_dice(fl, b["moving_labels"][0, 0].cpu().numpy()))
            elif self.kind == "segmentation":
                pred = self.net(b["fixed"]).argmax(1)[0].cpu().numpy()
                truth = self.target(b["fixed_labels"])[0, 0].cpu().numpy()
                dices.append(mean_foreground_dice(truth, pred))
        self.net.train()
        out = {"val_loss": float(np.mean(losses))}
        if dices:
            out["val_dice"] = float(np.nanmean(dices))
        if identity:
            out["val_dice_identity"] = float(np.nanmean(identity))
        out["score"] = out["val_dice"] if self.kind == "registration" else -out["val_loss"]
        return out


def train(
    cfg: dict,
    out: str | Path,
    device: str = "auto",
    resume: bool = True,
    base: Path | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train what ``cfg`` describes into ``out``; returns the best metrics and the network.

    Writes ``out/checkpoint.pt`` (latest state, for resuming), ``out/model.pt`` (best model file)
    and ``out/log.jsonl`` (one JSON line per validation)."""
    from .datasets import make_source

    base = base or Path.cwd()
    rank, world = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda" else device
    )
    out = Path(out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)  # identical initial weights on every rank
    net_cfg = NetworkConfig.from_dict(
        {"spatial_dims": cfg["spatial_dims"], "kind": cfg["task"], **cfg["network"]}
    )
    net = build_network(net_cfg).to(dev)
    optim_cfg = {**DEFAULT_OPTIM, **cfg.get("optim", {})}
    if optim_cfg["init"]:
        _init_from(net, net_cfg, _resolve(optim_cfg["init"], base))
    opt = torch.optim.Adam(net.parameters(), lr=optim_cfg["lr"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=optim_cfg["plateau_factor"], patience=optim_cfg["plateau_patience"]
    )
    task = _Task(cfg, net, base, dev)
    train_src = make_source(cfg["data"], "train", seed, cfg.get("preprocessing"))
    val_src = make_source(cfg["data"], "val", seed, cfg.get("preprocessing"))
    gen = torch.Generator().manual_seed(seed * 1009 + rank)
    step, best, wall = 0, {"score": -float("inf")}, 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = load_torch_file(ckpt_path, "checkpoint", "deepsim checkpoint")
        try:
            saved = json.loads(ckpt["config"])
        except (KeyError, TypeError, ValueError):
            raise _malformed(ckpt_path) from None
        _check_same_run(saved, cfg, ckpt_path)
        try:
            net.load_state_dict(ckpt["network"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            step, wall = int(ckpt["step"]), float(ckpt["wall_s"])
            best = json.loads(ckpt["best"])
            if rank == 0:  # rank 0's data stream continues; other ranks re-seed from the step
                gen.set_state(ckpt["generator"])
            else:
                gen.manual_seed(seed * 1009 + rank + 1_000_003 * step)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError):
            raise _malformed(ckpt_path) from None
        log.info("resumed from step %d", step)
    start_step = step
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    use_amp = bool(optim_cfg["amp"]) and dev.type == "cuda"
    steps = int(optim_cfg["steps"])
    bar = ProgressBar(steps, step, cfg.get("name", "train")) if progress and rank == 0 else None
    net.train()
    t_start = time.perf_counter() - wall
    while step < steps:
        b = _batch(train_src, optim_cfg["batch_size"], gen, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = task.loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim_cfg["grad_clip"] > 0:  # one bad pair must not throw the weights off
            nn.utils.clip_grad_norm_(net.parameters(), optim_cfg["grad_clip"])
        opt.step()
        step += 1
        if bar is not None:
            bar.show(step, f"loss {float(loss.detach()):.4f}")
        last = step == steps
        if step % optim_cfg["val_every"] == 0 or last:
            metrics = task.validate(val_src, optim_cfg["val_pairs"], dev)
            sched.step(metrics["score"])
            metrics.update(
                step=step,
                lr=opt.param_groups[0]["lr"],
                wall_s=round(time.perf_counter() - t_start, 1),
            )
            if rank == 0:
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                log.info("step %d %s", step, metrics)
                if metrics["score"] > best["score"]:
                    best = metrics
                    _save_model_file(out / "model.pt", cfg, net_cfg, net, task, metrics)
        if rank == 0 and (step % optim_cfg["checkpoint_every"] == 0 or last):
            _save_checkpoint(
                ckpt_path, cfg, net, opt, sched, step, time.perf_counter() - t_start, best, gen
            )
    if bar is not None:
        bar.close()
    if world > 1:
        torch.distributed.barrier()
    return TrainOutcome(best, net, step, start_step)


def _role(task: str) -> str:
    """The key of a task's network in model files."""
    return "registration" if task == "registration" else "extractor"


def _init_from(net: nn.Module, net_cfg: NetworkConfig, path: Path) -> None:
    """Start ``net`` from the weights of the same network in the model file ``path`` (fine-tuning):
    its registration network, or its extractor for an extractor task."""
    role = _role(net_cfg.kind)
    source = load_model(path)
    saved = source.config["networks"].get(role)
    if saved is None or NetworkConfig.from_dict(saved) != net_cfg:  # defaults of newer keys
        raise ValueError(
            f"optim.init: the {role} network of {path} is not the network this config builds "
            f"(file: {saved}, config: {net_cfg.to_dict()})"
        )
    net.load_state_dict(source.networks[role].state_dict())
    log.info("initialised the %s network from %s", role, path)


RESUME_KEYS = ("task", "spatial_dims", "network", "data", "loss", "seed")
"""Config entries a resumed run must share with its checkpoint (the step budget may change)."""


def _malformed(path: Path) -> ConfigError:
    return ConfigError(
        f"checkpoint {path} is malformed or from another network; delete it or use --no-resume"
    )


def _check_same_run(saved: dict, cfg: dict, path: Path) -> None:
    if not isinstance(saved, dict):
        raise _malformed(path)
    differ = [k for k in RESUME_KEYS if saved.get(k) != cfg.get(k)]
    if differ:
        raise ValueError(
            f"{path} belongs to another run (its {', '.join(differ)} differ); "
            "use another output folder or --no-resume"
        )


def _save_checkpoint(path, cfg, net, opt, sched, step, wall, best, gen):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "config": json.dumps(cfg),
            "network": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "wall_s": wall,
            "best": json.dumps(best),
            "generator": gen.get_state(),
        },
        tmp,
    )
    os.replace(tmp, path)


def _save_model_file(path, cfg, net_cfg, net, task: _Task, metrics: dict):
    role = _role(cfg["task"])
    networks = {role: net}
    net_cfgs = {role: net_cfg.to_dict()}
    trained_on = {}
    if task.extractor is not None:
        networks["extractor"] = task.extractor.networks["extractor"]
        net_cfgs["extractor"] = task.extractor.config["networks"]["extractor"]
        own = task.extractor.config
        trained_on = {"loss": own.get("loss", {}), "data": own.get("info", {}).get("data")}
    config = {
        "name": cfg.get("name", path.parent.name),
        "spatial_dims": cfg["spatial_dims"],
        "networks": net_cfgs,
        "preprocessing": Preprocessing.from_dict(cfg.get("preprocessing")).to_dict(),
        "loss": cfg.get("loss", {}),
        "metrics": metrics,
        "info": {
            **cfg.get("info", {}),
            "task": cfg["task"],
            "data": cfg["data"],
            **({"extractor_training": trained_on} if trained_on else {}),
            "torch": torch.__version__,
            "hardware": f"{platform.machine()} {os.cpu_count()} cpus"
            + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        },
    }
    save_model(path, networks, config)


def train_from_config(
    config: str | Path, out=None, steps=None, device="auto", resume=True
) -> TrainOutcome:
    """Entry point of ``deepsim train``: paths in the config are relative to the config file."""
    config = Path(config)
    cfg = load_config(config)
    if steps is not None:
        cfg.setdefault("optim", {})["steps"] = steps
    base = config.resolve().parent
    out = Path(out if out is not None else cfg.get("out", f"runs/{cfg['name']}"))
    return train(cfg, out, device=device, resume=resume, base=base)
