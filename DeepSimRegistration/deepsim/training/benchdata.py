"""Benchmark pairs from real anatomies: semi-synthetic (known deformation) and inter-template.

- :func:`semi_synthetic_pairs`: a real template image and its real labels under a known random
  diffeomorphic deformation and random intensity changes (bias, contrast, gamma, noise). Each pair
  has a ground-truth displacement, so registration error can be measured in voxels as well as by
  Dice. Reproducible from ``seed``.
- :func:`template_pairs`: real pairs between two different templates (no ground-truth
  deformation), with labels mapped to the richest label scheme both support
  (:func:`deepsim.training.anatomy.common_scheme`), so Dice is meaningful.

Both work in 3D on the common 2 mm grid of :mod:`deepsim.training.anatomy` ``(96, 112, 96)`` or in 2D on
slices of it. Tensors follow :mod:`deepsim.warp`: images ``(1, 1, *spatial)``, displacements
``(1, D, *spatial)`` in voxels, ``warp(moving, disp) ≈ fixed``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch

from .anatomy import (
    TISSUE_SCHEMES,
    available,
    common_scheme,
    list_anatomies,
    load_anatomy,
    tissue_labels,
)
from .synth import SynthConfig, synth_pair

__all__ = [
    "BENCH_CONFIG",
    "pair_generator",
    "semi_synthetic_pairs",
    "template_pairs",
]

logger = logging.getLogger(__name__)

BENCH_CONFIG = SynthConfig(
    max_disp=4.0,  # 2 mm voxels: up to 8 mm
    min_disp_frac=0.5,
    disp_smoothness=24.0,
    seed_max_disp=2.0,
    bias_strength=0.2,
    gamma_std=0.15,
    noise_range=(0.0, 0.03),
    contrast_range=(0.85, 1.15),
    real_image_prob=1.0,
)
"""Default settings of :func:`semi_synthetic_pairs`: the real image, always, with mild changes."""


def pair_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Generator for pair ``index`` of benchmark ``seed``; (seed, index) pairs never collide."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def _default_slice(axis: int) -> int:
    # through the middle of the brain on the common grid (RAS z = 18 mm, y = -20 mm, x = 0 mm)
    return {0: 48, 1: 56, 2: 48}[axis]


def _volume_or_slice(
    array: np.ndarray, spatial_dims: int, slice_axis: int, slice_index: int | None
) -> np.ndarray:
    if spatial_dims == 3:
        return array
    index = _default_slice(slice_axis) if slice_index is None else slice_index
    return np.take(array, index, axis=slice_axis)


def _check_common(func: str, spatial_dims: int, slice_axis: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"{func}(): spatial_dims must be 2 or 3, got {spatial_dims}")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"{func}(): slice_axis must be 0, 1 or 2, got {slice_axis}")


def semi_synthetic_pairs(
    anatomy: str,
    n: int,
    seed: int,
    spatial_dims: Literal[2, 3] = 3,
    config: SynthConfig | None = None,
    scheme: str | None = None,
    slice_axis: int = 0,
    slice_index: int | None = None,
    device: torch.device | str = "cpu",
    start: int = 0,
) -> Iterator[dict[str, Any]]:
    """Real anatomy and real labels under known random deformations and intensity changes.

    Pair ``i`` is :func:`deepsim.training.synth.synth_pair` with the anatomy's labels and image as seeds
    and the generator :func:`pair_generator` ``(seed, i)``: the moving image is the template
    under a small random deformation, the fixed image the template under that deformation
    composed with the ground truth ``disp``, each with its own intensity augmentation. So
    ``warp(moving, disp) ≈ fixed`` and ``warp(moving_labels, disp, "nearest") ≈ fixed_labels``.

    Args:
        anatomy: a name of :func:`deepsim.training.anatomy.list_anatomies` (its package must be
            installed).
        n: number of pairs.
        seed: benchmark seed; the same (anatomy, n, seed, settings) give the same pairs.
        spatial_dims: 3 for the ``(96, 112, 96)`` volume, 2 for one slice of it.
        config: generator settings (default :data:`BENCH_CONFIG`; for the real image use
            ``real_image_prob=1``).
        scheme: None keeps the anatomy's own labels; a scheme of
            :data:`deepsim.training.anatomy.TISSUE_SCHEMES` maps them to shared coarse classes first.
        slice_axis: for 2D, 0 axial, 1 coronal, 2 sagittal.
        slice_index: for 2D, index along ``slice_axis`` (default: through the brain centre).
        device: device of the tensors.
        start: index of the first pair (pairs ``start .. start + n - 1``; random access).

    Yields:
        Dicts of :func:`deepsim.training.synth.synth_pair` (``fixed``, ``moving``, ``fixed_labels``,
        ``moving_labels``, ``disp``) plus ``anatomy``, ``index``, ``seed`` and ``label_names``.
    """
    _check_common("semi_synthetic_pairs", spatial_dims, slice_axis)
    if n < 0:
        raise ValueError(f"semi_synthetic_pairs(): n must be >= 0, got {n}")
    cfg = config if config is not None else BENCH_CONFIG
    image, labels, info = load_anatomy(anatomy)
    names = dict(info["label_names"])
    if scheme is not None:
        labels = tissue_labels(anatomy, scheme, labels)
        names = {0: "background", **TISSUE_SCHEMES[scheme]}
    image = _volume_or_slice(image, spatial_dims, slice_axis, slice_index)
    labels = _volume_or_slice(labels, spatial_dims, slice_axis, slice_index)
    seed_image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    seed_labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).to(device)
    shape = tuple(seed_image.shape)
    for index in range(start, start + n):
        generator = pair_generator(seed, index, device)
        pair = synth_pair(shape, generator, cfg, seed_labels=seed_labels, seed_image=seed_image)
        pair.update(anatomy=anatomy, index=index, seed=seed, label_names=names)
        yield pair


def template_pairs(
    names: Sequence[str] | None = None,
    spatial_dims: Literal[2, 3] = 3,
    both_directions: bool = True,
    slice_axis: int = 0,
    slice_index: int | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Real inter-template pairs with labels on the richest shared scheme.

    No ground-truth deformation exists; evaluate by Dice of the shared classes (and folding).
    The templates start roughly aligned in MNI space.

    Args:
        names: anatomies to pair (default: all installed ones).
        spatial_dims: 3 for the volumes, 2 for one slice of each (same grid position).
        both_directions: include (a, b) and (b, a); else only pairs with ``a`` before ``b``.
        slice_axis: for 2D, 0 axial, 1 coronal, 2 sagittal.
        slice_index: for 2D, index along ``slice_axis`` (default: through the brain centre).
        device: device of the tensors.

    Returns:
        List of dicts with ``fixed``, ``moving`` ``(1, 1, *spatial)`` float32 in ``[0, 1]``,
        ``fixed_labels``, ``moving_labels`` ``(1, 1, *spatial)`` int64 in the shared
        ``scheme``, and ``fixed_name``, ``moving_name``, ``scheme``, ``label_names``.
    """
    _check_common("template_pairs", spatial_dims, slice_axis)
    if names is None:
        names = [n for n in list_anatomies() if available(n)]
    names = list(names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"template_pairs(): names must be >= 2 distinct anatomies, got {names}")
    data = {}
    for name in names:
        image, labels, _ = load_anatomy(name)
        data[name] = (image, labels)

    def tensor(array: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        array = _volume_or_slice(array, spatial_dims, slice_axis, slice_index)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))[None, None].to(device)

    pairs = []
    combos = (
        itertools.permutations(names, 2) if both_directions else itertools.combinations(names, 2)
    )
    for fixed_name, moving_name in combos:
        scheme = common_scheme([fixed_name, moving_name])
        out: dict[str, Any] = {"fixed_name": fixed_name, "moving_name": moving_name}
        for role, name in (("fixed", fixed_name), ("moving", moving_name)):
            image, labels = data[name]
            out[role] = tensor(image, np.float32)
            out[f"{role}_labels"] = tensor(tissue_labels(name, scheme, labels), np.int64)
        out.update(scheme=scheme, label_names={0: "background", **TISSUE_SCHEMES[scheme]})
        pairs.append(out)
    logger.debug("template_pairs: %d pairs of %s", len(pairs), names)
    return pairs
