"""Engine settings and quality presets, torch-free: one place for every default of the engine.

* :class:`LevelSettings`, :class:`EngineSettings`: what :func:`deepsim.engine.optimise` runs;
* :data:`PRESETS`: ``fast``, ``recommended`` (the default) and ``best``, each the levels of the
  engine (shrink factors of the model grid, Adam steps, step size, update smoothing, sampling)
  and whether updates are diffeomorphic;
* :data:`MODEL_SIMILARITY`: each shipped model's default similarity and regularisation, chosen by
  validation (see the comments); other models and the training-free mode use :data:`DEFAULT`;
* :data:`DEEPSIM_JUDGE`: the models whose own DeepSim chooses between the network's field and the
  engine's by default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "SIMILARITIES",
    "LevelSettings",
    "EngineSettings",
    "PRESETS",
    "DEFAULT_PRESET",
    "MODEL_SIMILARITY",
    "DEEPSIM_JUDGE",
    "DEFAULT",
    "parse_similarity",
    "engine_settings",
]

SIMILARITIES = ("ncc", "mind", "deepsim")  # menus list them in this order


@dataclass(frozen=True)
class LevelSettings:
    """One pyramid level: ``shrink`` (1 = the model grid), Adam ``steps`` and ``lr`` (voxels of
    the parameter grid per step), ``smooth``: Gaussian sigma (parameter-grid voxels) of the update,
    ``grid``: the update's parameter grid is ``grid`` times coarser than the level's images
    (upsampled linearly; ConvexAdam's half-resolution Adam grid), 1 = the level itself;
    ``samples``: when the similarity is MIND alone, evaluate it at this many random voxels of the
    mask, drawn afresh each step (elastix's random sampler), 0 = at every voxel."""

    shrink: int
    steps: int
    lr: float
    smooth: float = 2.0
    grid: int = 1
    samples: int = 0


@dataclass(frozen=True)
class EngineSettings:
    """``similarity``: (name, weight) pairs of :data:`SIMILARITIES`, each weight its own lambda;
    ``regularization``: weight of the diffusion of the field so far plus each level's update
    (``regularize_field``; False: of the update alone, which leaves a rough start where the data
    cannot see); ``diffeomorphic``: updates are stationary velocity fields (scaling and squaring,
    ``integration_steps``); ``ncc_window``: local NCC box width; ``tolerance``/``patience``: a
    level stops when its loss improved by less than ``tolerance`` (relative) over ``patience``
    steps."""

    levels: tuple[LevelSettings, ...] = (
        LevelSettings(4, 60, 0.5),
        LevelSettings(2, 40, 0.4),
    )
    similarity: tuple[tuple[str, float], ...] = (("mind", 3.0),)
    regularization: float = 10.0
    regularize_field: bool = True
    diffeomorphic: bool = True
    integration_steps: int = 6
    ncc_window: int = 5
    tolerance: float = 1e-3
    patience: int = 10

    def __post_init__(self):
        for name, weight in self.similarity:
            if name not in SIMILARITIES:
                raise ValueError(f"unknown similarity {name!r}; choose from {SIMILARITIES}")
            if weight < 0:
                raise ValueError(f"similarity weight of {name!r} must be >= 0, got {weight}")
        if not self.levels or any(
            lv.shrink < 1 or lv.steps < 0 or lv.grid < 1 or lv.samples < 0 for lv in self.levels
        ):
            raise ValueError(
                "engine levels need shrink >= 1, grid >= 1, steps >= 0 and samples >= 0"
            )

    @property
    def total_steps(self) -> int:
        return sum(lv.steps for lv in self.levels)

    def to_dict(self) -> dict:
        return {
            "levels": [vars(lv).copy() for lv in self.levels],
            "similarity": dict(self.similarity),
            "regularization": self.regularization,
            "regularize_field": self.regularize_field,
            "diffeomorphic": self.diffeomorphic,
            "integration_steps": self.integration_steps,
            "ncc_window": self.ncc_window,
            "tolerance": self.tolerance,
            "patience": self.patience,
        }


PRESETS: dict[str, dict] = {
    # 1/4 of the model grid, then the model grid itself with MIND at 30 000 random mask voxels per
    # step and the update on a grid twice as coarse; plain (not integrated) updates
    "fast": {
        "levels": (LevelSettings(4, 30, 0.5), LevelSettings(1, 15, 0.3, grid=2, samples=30_000)),
        "diffeomorphic": False,
    },
    # the default: 1/4, 1/2 and the model grid, 50 000 random mask voxels per step on the finer
    # two (elastix's random sampler; dense evaluation gave the same endpoint error, 0.57 mm, on a
    # held-out 2 mm brain pair in 4x the time; 25 000 samples matched 50 000 on 4 fsaverage
    # validation pairs, 0.732 against 0.729 mm, results/engine_validation_3d_samples.json, but
    # cost 0.03 mm on the brain-3d card's held-out pairs, 0.604 against 0.576 mm, so not taken);
    # a full-resolution level roughly halves the endpoint error (1.24 -> 0.58 mm there); the two
    # finer levels update on grids twice as coarse (0.752 against 0.783 mm on 4 fsaverage
    # validation pairs, benchmarks/engine_validation.py);
    # plain updates: scaling and squaring cost 40 % more time for the same error and no folding
    # (benchmarks/classical.py reports folding per pair)
    "recommended": {
        "levels": (
            LevelSettings(4, 60, 0.5),
            LevelSettings(2, 40, 0.4, grid=2, samples=50_000),
            LevelSettings(1, 20, 0.3, grid=2, samples=50_000),
        ),
        "diffeomorphic": False,
    },
    # every voxel, more steps, the update at full resolution, diffeomorphic, a stricter stop
    "best": {
        "levels": (
            LevelSettings(4, 100, 0.5),
            LevelSettings(2, 80, 0.4),
            LevelSettings(1, 40, 0.3),
        ),
        "diffeomorphic": True,
        "tolerance": 1e-4,
    },
}
DEFAULT_PRESET = "recommended"

DEFAULT = EngineSettings()
"""Training-free default and the default of models without an entry below: MIND-SSC x 3 +
10 x diffusion, chosen on fsaverage-derived semi-synthetic 2D/3D pairs (benchmarks/engine_validation.py);
the diffusion of the whole field rather than of each level's update (``regularize_field``):
0.729 against 0.752 mm on 4 fsaverage validation pairs with the ``recommended`` levels, and on
three random-shape phantom validation pairs (benchmarks/phantom_gate.py --seeds 10 11 12) 1.01
against 1.10 mm training-free and 0.78/1.11/0.96 against 1.00/1.10/1.11 mm from a network start."""

MODEL_SIMILARITY: dict[str, dict] = {
    "brain-3d": {"similarity": (("mind", 3.0),), "regularization": 10.0},
    "brain-3d-ae": {"similarity": (("mind", 3.0),), "regularization": 10.0},
    "general-2d": {"similarity": (("mind", 3.0),), "regularization": 10.0},
}


DEEPSIM_JUDGE = frozenset({"general-3d", "brain-3d", "brain-3d-ae"})
"""Models that, by default, keep the network's field instead of the engine's when their own
DeepSim rates it higher (``RegistrationOptions.deepsim_judge``). Validated by
``benchmarks/engine_arbiter.py``: on 5 validation phantoms and 3 held-out MNI 2009a pairs per 3D
model it lowered every 3D model's mean endpoint error below both fields' (general-3d 0.62 mm
against 0.76 network, 0.69 engine). general-2d is left out: its network was trained on its
DeepSim alone (the 3D ones also on the known displacement), so it maximises the judge's own score;
the judge kept its field on all 8 held-out 2D pairs, where the engine's had the lower error on 6
(mean 0.62 against 0.43 mm)."""


def parse_similarity(text: str) -> tuple[tuple[str, float], ...]:
    """``"ncc"``, ``"mind"``, ``"ncc+3*mind"`` or ``"ncc:1,deepsim:10"`` -> (name, weight) pairs."""
    out = []
    for part in text.replace(",", "+").split("+"):
        part = part.strip()
        if not part:
            continue
        weight = "1"
        if "*" in part:
            weight, part = (s.strip() for s in part.split("*", 1))
        elif ":" in part:
            part, weight = (s.strip() for s in part.split(":", 1))
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"similarity {text!r}: weight {weight!r} is not a number") from None
        if part not in SIMILARITIES:
            raise ValueError(f"similarity {text!r}: unknown {part!r}; choose from {SIMILARITIES}")
        out.append((part, value))
    if not out:
        raise ValueError(f"similarity {text!r} names no similarity")
    return tuple(out)


def engine_settings(
    preset: str | None = None,
    model: str | None = None,
    similarity: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
) -> EngineSettings:
    """The engine's settings for a ``preset`` and a model name, with optional overrides:
    ``similarity`` (text for :func:`parse_similarity`); ``steps``/``lr``: one level of
    ``steps`` Adam steps on the model grid instead of the preset's levels."""
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    settings = replace(DEFAULT, **PRESETS[preset], **MODEL_SIMILARITY.get(model or "", {}))
    if similarity is not None:
        settings = replace(settings, similarity=parse_similarity(similarity))
    if steps is not None:
        level = LevelSettings(1, int(steps), lr if lr is not None else 0.3)
        settings = replace(settings, levels=(level,))
    return settings
