"""Training data behind one small interface: a source of image pairs with labels on the model grid.

A *source* has ``sample(generator, device) -> dict`` (one random pair), ``pair(index, device)``
(a fixed, reproducible pair, for validation), each returning ``(1, 1, *shape)`` tensors
``fixed, moving`` in ``[0, 1]`` and integer ``fixed_labels, moving_labels``, and ``grid``: the
physical grid of its arrays (evaluation registers them there).

Kinds (the ``data`` entry of a training config) are an open registry: :func:`register_source`
adds one (the benchmarks add theirs), :func:`make_source` builds the one a config names. Built in:

* ``{"kind": "synthetic", "shape": [...], "synth": {...}, "spacing": [...]}``: on-the-fly synthetic pairs
  (:mod:`deepsim.training.synth`), optionally seeded with real anatomies (``"anatomies": ["fsaverage"]``);
* ``{"kind": "folder", "root": DIR, ...}``: NIfTI images in ``DIR/images`` and label maps of the
  same names in ``DIR/labels``, resampled onto one model grid;
* ``{"kind": "anatomy", "names": [...]}``: semi-synthetic pairs of real anatomies under known
  deformations (:mod:`deepsim.training.benchdata`), for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..geometry import Grid

__all__ = ["PairSource", "register_source", "make_source", "FolderPairs"]


class PairSource(Protocol):
    grid: Grid

    def sample(self, generator: torch.Generator, device="cpu") -> dict: ...

    def pair(self, index: int, device="cpu") -> dict: ...


SourceFactory = Callable[[dict, str, int, "dict | None"], PairSource]
"""``factory(data, split, seed, preprocessing) -> source``."""

_SOURCES: dict[str, SourceFactory] = {}


def register_source(kind: str, factory: SourceFactory) -> None:
    """Make ``{"kind": kind, ...}`` data configs build their source with ``factory``."""
    _SOURCES[kind] = factory


class FolderPairs:
    """Pairs of images (and labels) from a folder; every image is resampled onto the model grid of
    the first one (``preprocessing`` spacing), intensities normalised as at registration."""

    def __init__(
        self, root: str | Path, preprocessing: dict, split: str = "train", val_fraction=0.2
    ):
        from ..api import Preprocessing
        from ..geometry import model_grid, read_image, resample
        from ..preprocess import normalize_intensity

        pre = Preprocessing.from_dict(preprocessing)
        root = Path(root)
        paths = sorted(p for p in (root / "images").glob("*") if p.is_file())
        if len(paths) < 2:
            raise ValueError(
                f"FolderPairs: need at least 2 images in {root / 'images'}, found {len(paths)}"
            )
        n_val = max(1, int(round(len(paths) * val_fraction))) if len(paths) > 2 else 0
        paths = paths[n_val:] if split == "train" else paths[:n_val] or paths
        first = read_image(paths[0])
        self.grid = model_grid(first.grid, pre.spacing, pre.multiple, pre.orientation)
        self.images, self.labels = [], []
        for path in paths:
            img = read_image(path)
            norm = normalize_intensity(img.array, pre.lower_percentile, pre.upper_percentile)
            img.array = norm
            self.images.append(
                torch.from_numpy(resample(img, self.grid).array.astype(np.float32))[None, None]
            )
            lab_path = root / "labels" / path.name
            if lab_path.exists():
                lab = resample(read_image(lab_path, "labels"), self.grid, None, "nearest")
                self.labels.append(torch.from_numpy(lab.array.astype(np.int64))[None, None])
            else:
                self.labels.append(torch.zeros_like(self.images[-1], dtype=torch.long))

    def _make(self, i: int, j: int, device) -> dict:
        return {
            "fixed": self.images[i].to(device),
            "moving": self.images[j].to(device),
            "fixed_labels": self.labels[i].to(device),
            "moving_labels": self.labels[j].to(device),
        }

    def sample(self, generator: torch.Generator, device="cpu") -> dict:
        n = len(self.images)
        i, j = torch.randperm(n, generator=generator)[:2].tolist()
        return self._make(i, j, device)

    def pair(self, index: int, device="cpu") -> dict:
        n = len(self.images)
        i = index % n
        return self._make(i, (i + 1 + index // n) % n if n > 1 else i, device)


class _Synthetic:
    def __init__(self, cfg: dict, split: str, seed: int):
        from . import synth

        seeds = None
        if cfg.get("anatomies"):
            seeds = [_anatomy_seed(name, cfg.get("label_scheme")) for name in cfg["anatomies"]]
        config = synth.SynthConfig.from_dict(cfg.get("synth", {}))
        offset = 0 if split == "train" else 10_000_019
        shape = tuple(cfg["shape"])
        self.pairs = synth.SyntheticPairs(shape, config, seed + offset, seeds=seeds)
        if seeds:  # seeded by anatomies: their grid
            from .anatomy import anatomy_grid

            self.grid = anatomy_grid(len(shape))
        else:  # "spacing": voxel size in mm (default 1), so a model grid coarser than 1 mm fits
            spacing = [float(v) for v in cfg.get("spacing", [1.0] * len(shape))]
            if len(spacing) != len(shape) or min(spacing) <= 0:
                raise ValueError(f"data.spacing must be {len(shape)} sizes > 0, got {spacing}")
            self.grid = Grid(shape, np.diag([*spacing, 1.0]))

    def sample(self, generator, device="cpu") -> dict:
        return {k: v.to(device) for k, v in self.pairs.sample(generator).items()}

    def pair(self, index, device="cpu") -> dict:
        return {k: v.to(device) for k, v in self.pairs.pair(index).items()}


def _anatomy_seed(name: str, scheme: str | None):
    """``(labels, image)`` tensors of a real anatomy; labels mapped to ``scheme``: a coarse
    scheme of :func:`deepsim.training.anatomy.tissue_labels`, or ``contiguous`` (ids renumbered 0..K-1)."""
    from .anatomy import load_anatomy, tissue_labels

    image, labels, _ = load_anatomy(name)
    if scheme == "contiguous":
        labels = np.searchsorted(np.unique(labels), labels)
    elif scheme is not None:
        labels = tissue_labels(name, scheme, labels)
    return torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(image.astype(np.float32))


class _Anatomy:
    """Semi-synthetic pairs of one real anatomy under known deformations (evaluation)."""

    def __init__(self, cfg: dict, split: str, seed: int):
        self.name, self.scheme = cfg["names"][0], cfg.get("label_scheme")
        self.spatial_dims = int(cfg.get("spatial_dims", 3))
        self.seed = seed + (0 if split == "test" else 7919)
        from .anatomy import anatomy_grid

        self.grid = anatomy_grid(self.spatial_dims)

    def pair(self, index: int, device="cpu") -> dict:
        from .benchdata import semi_synthetic_pairs

        item = next(
            semi_synthetic_pairs(
                self.name, 1, self.seed, self.spatial_dims, scheme=self.scheme, start=index
            )
        )
        keys = ("fixed", "moving", "fixed_labels", "moving_labels", "disp")
        return {k: item[k].to(device) for k in keys}

    def sample(self, generator, device="cpu") -> dict:
        return self.pair(int(torch.randint(1000, (), generator=generator)), device)


class _Cropped:
    """Random crops of ``crop`` voxels (same region in every tensor of a pair), for training on
    less than a whole volume; ``pair`` (validation) stays whole."""

    def __init__(self, source, crop: list[int]):
        self.source, self.crop = source, [int(c) for c in crop]
        self.grid = source.grid

    def sample(self, generator, device="cpu") -> dict:
        item = self.source.sample(generator, device)
        shape = item["fixed"].shape[2:]
        if len(shape) != len(self.crop) or any(c > n for c, n in zip(self.crop, shape)):
            raise ValueError(f"data.crop {self.crop} does not fit the data shape {tuple(shape)}")
        starts = [
            int(torch.randint(n - c + 1, (), generator=generator)) for c, n in zip(self.crop, shape)
        ]
        region = (slice(None), slice(None)) + tuple(
            slice(s, s + c) for s, c in zip(starts, self.crop)
        )
        return {k: v[region] for k, v in item.items()}

    def pair(self, index: int, device="cpu") -> dict:
        return self.source.pair(index, device)


def make_source(data: dict, split: str = "train", seed: int = 0, preprocessing: dict | None = None):
    """The pair source a ``data`` config describes (see module docstring)."""
    kind = data.get("kind")
    if kind not in _SOURCES:
        raise ValueError(f"data.kind must be one of {', '.join(sorted(_SOURCES))}; got {kind!r}")
    source = _SOURCES[kind](data, split, seed, preprocessing)
    return _Cropped(source, data["crop"]) if data.get("crop") and split == "train" else source


register_source("synthetic", lambda data, split, seed, pre: _Synthetic(data, split, seed))
register_source("anatomy", lambda data, split, seed, pre: _Anatomy(data, split, seed))
register_source(
    "folder",
    lambda data, split, seed, pre: FolderPairs(
        data["root"], pre or {}, split, data.get("val_fraction", 0.2)
    ),
)
