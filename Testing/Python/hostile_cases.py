"""Hostile inputs and situations for the ``deepsim`` command, as a careful user or a broken
pipeline produces them. Shared by ``test_hostile_inputs.py`` (in-process, asserting each outcome)
and ``scripts/hostile_tally.py`` (one subprocess per case, classifying any code's behaviour).

A case builds its inputs under ``work/in`` and returns the command line. Everything else under
``work`` (``prev/``: a folder holding an earlier registration; ``prev.nii.gz``: an earlier warp
output) must be byte-identical afterwards unless the case expects success.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from conftest import REGISTER_OUTPUTS, blob_image, make_model_file, oblique_grid
from deepsim.geometry import Image, to_sitk


@dataclass
class Env:
    """Shared files: a 2D pair with labels, tiny models, an earlier run's output folder."""

    root: Path
    fixed: Path
    moving: Path
    fixed_labels: Path
    moving_labels: Path
    model2d: Path
    model3d: Path
    prev: Path  # an earlier run: every output, labels and figure included
    prev_warp: Path  # an earlier 'deepsim warp' output


@dataclass
class Case:
    id: str
    principle: int
    build: Callable[[Env, Path], list[str]]
    expect: str | None  # a fragment the error names; None: the command must succeed
    check: Callable[[Path], None] | None = None  # after a success
    policy: bool = False  # refusal is this version's policy; earlier ones may accept it safely


def write(image: Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(image), str(path))
    return path


def snapshot(folder: Path, skip: str = "in") -> dict[str, bytes]:
    """Every file under ``folder`` (but ``skip``) with its bytes; folders as empty entries."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] == skip:
            continue
        out[str(rel)] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def make_env(root: Path, register: Callable[[list[str]], None]) -> Env:
    """Inputs plus an earlier run made with ``register(argv)`` (in-process or not)."""
    grid = oblique_grid((36, 40))
    f = write(blob_image(grid), root / "fixed.nii.gz")
    m = write(blob_image(grid, centre_shift=[3.0, -2.0]), root / "moving.nii.gz")
    lab = lambda img: Image((img.array > 150).astype(np.uint8), grid)  # noqa: E731
    fl = write(lab(blob_image(grid)), root / "fl.nii.gz")
    ml = write(lab(blob_image(grid, [3.0, -2.0])), root / "ml.nii.gz")
    m2 = make_model_file(root / "tiny2d.pt", 2, spacing=1.0)
    m3 = make_model_file(root / "tiny3d.pt", 3, spacing=2.0)
    prev = root / "prev"
    register(
        ["register", f, m, "--out", prev, "--model", m2, "--fixed-labels", fl]
        + ["--moving-labels", ml, "--device", "cpu", "--io-steps", "2"]
    )  # the cases run without instance optimisation: any file they overwrite changes
    prev_warp = root / "prev.nii.gz"
    shutil.copy(ml, prev_warp)
    return Env(root, f, m, fl, ml, m2, m3, prev, prev_warp)


def prepare(env: Env, work: Path) -> None:
    """A fresh case folder: ``prev/`` and ``prev.nii.gz`` copied from the earlier run."""
    shutil.copytree(env.prev, work / "prev")
    shutil.copy(env.prev_warp, work / "prev.nii.gz")
    (work / "in").mkdir()


# ---------------------------------------------------------------- builders of hostile files


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def short_nifti_gz(src: Path, dst: Path) -> Path:
    """A complete gzip stream holding a NIfTI whose voxel data is cut in half."""
    raw = gzip.decompress(src.read_bytes())
    dst.write_bytes(gzip.compress(raw[: 352 + (len(raw) - 352) // 2]))
    return dst


def flipped_byte(src: Path, dst: Path) -> Path:
    """A gzip file with one byte of its compressed stream changed (a damaged disk or transfer)."""
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def mha_header_edit(src_image: Image, dst: Path, key: str, value: str) -> Path:
    """An ``.mha`` with one header line replaced (zero spacing, a singular direction ...)."""
    write(src_image, dst)
    head, sep, body = dst.read_bytes().partition(b"ElementDataFile = LOCAL\n")
    lines = [
        f"{key} = {value}".encode() if line.split(b"=")[0].strip() == key.encode() else line
        for line in head.split(b"\n")
    ]
    dst.write_bytes(b"\n".join(lines) + sep + body)
    return dst


def image2d(env: Env) -> Image:
    img = sitk.ReadImage(str(env.moving))
    from deepsim.geometry import from_sitk

    return from_sitk(img)


def reg(env: Env, work: Path, fixed=None, moving=None, *extra, model=None) -> list[str]:
    return [
        "register",
        fixed or env.fixed,
        moving or env.moving,
        "--out",
        work / "prev",
        "--model",
        model or env.model2d,
        "--device",
        "cpu",
        "--no-figure",
        *extra,
    ]


def reg_labels(env: Env, work: Path, fixed_labels=None, moving_labels=None) -> list[str]:
    return reg(
        env,
        work,
        None,
        None,
        "--fixed-labels",
        fixed_labels or env.fixed_labels,
        "--moving-labels",
        moving_labels or env.moving_labels,
    )


def labels_like(env: Env, array: np.ndarray, path: Path, grid=None) -> Path:
    return write(Image(array, grid or image2d(env).grid), path)


def volume(shape, spacing=None) -> Image:
    return blob_image(oblique_grid(shape, spacing))


def train_config(work: Path, **changes) -> Path:
    cfg = {
        "task": "registration",
        "spatial_dims": 2,
        "network": {"channels": [4, 8]},
        "data": {"kind": "synthetic", "shape": [32, 32]},
        "loss": {"similarity": "mse"},
        "optim": {"steps": 2, "val_every": 2, "val_pairs": 1},
    }
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    path = work / "in" / "train.json"
    path.write_text(json.dumps(cfg))
    return path


def train(work: Path, config: Path, *extra) -> list[str]:
    return ["train", config, "--out", work / "run", "--device", "cpu", *extra]


def model_payload(path: Path, mutate: Callable[[dict], None]) -> Path:
    """A model file made with ``torch.save`` of a real model's payload, changed by ``mutate``."""
    src = make_model_file(path.with_suffix(".src.pt"), 2, spacing=1.0)
    payload = torch.load(src, weights_only=True)
    mutate(payload)
    torch.save(payload, path)
    return path


def set_config(**entries) -> Callable[[dict], None]:
    def mutate(payload):
        cfg = json.loads(payload["config"])
        for key, value in entries.items():
            section, _, sub = key.partition("__")
            if sub:
                cfg.setdefault(section, {})[sub] = value
            else:
                cfg[section] = value
        payload["config"] = json.dumps(cfg)

    return mutate


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading a model file",))


def evil_pickle(path: Path) -> Path:
    torch.save({"format": "deepsim", "version": 1, "config": "{}", "networks": _Evil()}, path)
    return path


def evaluate(work: Path, *extra, data=None) -> list[str]:
    cfg = work / "in" / "eval.json"
    cfg.write_text(json.dumps(data or {"data": {"kind": "synthetic", "shape": [32, 32]}}))
    return ["evaluate", cfg, "--device", "cpu", *extra]


def _ok_outputs(expected: set[str]) -> Callable[[Path], None]:
    def check(work: Path) -> None:
        names = {p.name for p in (work / "prev").iterdir()}
        assert names == expected, f"stale or missing outputs: {sorted(names ^ expected)}"
        assert [p.name for p in work.iterdir()] != [], "case folder vanished"
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
        assert not leftovers, f"temporary files left: {leftovers}"

    return check


BASIC = REGISTER_OUTPUTS


def _nan_field(env: Env, work: Path) -> Path:
    field = np.zeros((*image2d(env).grid.shape, 2), np.float32)
    field[5, 7] = np.nan
    img = sitk.GetImageFromArray(field, isVector=True)
    ref = to_sitk(image2d(env))
    img.CopyInformation(ref)
    path = work / "in" / "nan_field.mha"
    sitk.WriteImage(img, str(path))
    return path


def _far_field(env: Env, work: Path) -> Path:
    field = np.full((*image2d(env).grid.shape, 2), 900.0, np.float32)
    img = sitk.GetImageFromArray(field, isVector=True)
    img.CopyInformation(to_sitk(image2d(env)))
    path = work / "in" / "far.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def _identity_field(env: Env, work: Path) -> Path:
    field = np.zeros((*image2d(env).grid.shape, 2), np.float32)
    img = sitk.GetImageFromArray(field, isVector=True)
    img.CopyInformation(to_sitk(image2d(env)))
    path = work / "in" / "identity.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def _warp(env: Env, work: Path, transform: Path, image=None) -> list[str]:
    return [
        "warp",
        image or env.moving_labels,
        "--transform",
        transform,
        "--out",
        work / "prev.nii.gz",
    ]


def _shifted_grid(env: Env, shift=None, spacing=None):
    g = image2d(env).grid
    m = g.index_to_lps.copy()
    if shift is not None:
        m[:2, 2] += shift
    if spacing is not None:
        m[:2, :2] *= spacing
    return type(g)(g.shape, m)


def _big(env: Env, work: Path, value: float, dtype, name: str) -> Path:
    arr = image2d(env).array.astype(dtype)
    arr[4, 4] = value
    return write(Image(arr, image2d(env).grid), work / "in" / name)


CASES: list[Case] = [
    # 1. an output folder changes all at once or not at all
    Case(
        "rerun-removes-stale-outputs",
        1,
        lambda e, w: reg(e, w),
        None,
        _ok_outputs(BASIC),
    ),
    Case(
        "unreplaceable-target-in-earlier-run",
        1,
        lambda e, w: (
            (w / "prev" / "jacobian.nii.gz").unlink(),
            (w / "prev" / "jacobian.nii.gz").mkdir(),
            reg(e, w),
        )[-1],
        "deepsim did not write (jacobian.nii.gz/)",
    ),
    Case(
        "out-holds-user-files",
        1,
        lambda e, w: (
            (w / "mine").mkdir(),
            (w / "mine" / "notes.txt").write_text("keep"),
            reg(e, w)[:4] + [w / "mine"] + reg(e, w)[5:],
        )[-1],
        "deepsim did not write (notes.txt)",
        policy=True,
    ),
    Case(
        "out-holds-a-subfolder-named-like-an-output",
        1,
        lambda e, w: (
            (w / "mine").mkdir(),
            (w / "mine" / "jacobian.nii.gz").mkdir(),
            reg(e, w)[:4] + [w / "mine"] + reg(e, w)[5:],
        )[-1],
        "deepsim did not write (jacobian.nii.gz/)",
    ),
    Case(
        "out-is-a-file",
        1,
        lambda e, w: reg(e, w)[:4] + [w / "prev.nii.gz"] + reg(e, w)[5:],
        "cannot create output folder",
    ),
    Case(
        "failure-after-earlier-run",
        1,
        lambda e, w: reg(
            e,
            w,
            None,
            write(
                Image(np.full((36, 40), 3.0, np.float32), image2d(e).grid), w / "in" / "c.nii.gz"
            ),
        ),
        "moving image is constant",
    ),
    Case(
        "warp-out-is-a-folder",
        1,
        lambda e, w: _warp(e, w, e.prev / "displacement.nii.gz")[:-1] + [w / "prev"],
        "is a folder",
    ),
    # 2. an input is read completely, or refused
    Case(
        "truncated-nii-gz",
        2,
        lambda e, w: reg(e, w, truncated(e.fixed, w / "in" / "f.nii.gz")),
        "truncated",
    ),
    Case(
        "truncated-nii",
        2,
        lambda e, w: reg(
            e,
            w,
            None,
            truncated(write(image2d(e), w / "in" / "full.nii"), w / "in" / "m.nii", 0.6),
        ),
        "truncated",
    ),
    Case(
        "nii-gz-with-short-data",
        2,
        lambda e, w: reg(e, w, None, short_nifti_gz(e.moving, w / "in" / "m.nii.gz")),
        "truncated",
    ),
    Case(
        "truncated-mha",
        2,
        lambda e, w: reg(
            e, w, None, truncated(write(image2d(e), w / "in" / "full.mha"), w / "in" / "m.mha")
        ),
        "truncated",
    ),
    Case(
        "damaged-gzip-byte",
        2,
        lambda e, w: reg(e, w, flipped_byte(e.fixed, w / "in" / "f.nii.gz")),
        "cannot read fixed image",
    ),
    Case(
        "truncated-displacement-field",
        2,
        lambda e, w: _warp(e, w, truncated(e.prev / "displacement.nii.gz", w / "in" / "d.nii.gz")),
        "truncated",
    ),
    # 3. an input must be what its role needs
    Case(
        "intensity-image-as-labels",
        3,
        lambda e, w: reg_labels(e, w, e.fixed, e.moving),
        "fractional values",
    ),
    Case(
        "integer-intensity-image-as-labels",
        3,
        lambda e, w: reg_labels(
            e,
            w,
            labels_like(
                e, np.arange(36 * 40, dtype=np.int16).reshape(36, 40), w / "in" / "fl.nii.gz"
            ),
        ),
        "distinct values",
    ),
    Case(
        "labels-with-another-origin",
        3,
        lambda e, w: reg_labels(
            e,
            w,
            labels_like(
                e,
                (image2d(e).array > 150).astype(np.uint8),
                w / "in" / "fl.nii.gz",
                _shifted_grid(e, shift=[5.0, 0.0]),
            ),
        ),
        "origin",
    ),
    Case(
        "labels-with-another-spacing",
        3,
        lambda e, w: reg_labels(
            e,
            w,
            None,
            labels_like(
                e,
                (image2d(e).array > 150).astype(np.uint8),
                w / "in" / "ml.nii.gz",
                _shifted_grid(e, spacing=2.0),
            ),
        ),
        "spacing",
    ),
    Case(
        "labels-with-another-size",
        3,
        lambda e, w: reg_labels(
            e,
            w,
            write(
                Image(np.ones((20, 20), np.uint8), oblique_grid((20, 20))), w / "in" / "fl.nii.gz"
            ),
        ),
        "must share its image's grid",
    ),
    Case(
        "labels-all-background",
        3,
        lambda e, w: reg_labels(
            e, w, None, labels_like(e, np.zeros((36, 40), np.uint8), w / "in" / "ml.nii.gz")
        ),
        "no foreground",
    ),
    Case(
        "warp-transform-far-from-image",
        3,
        lambda e, w: _warp(e, w, _far_field(e, w)),
        "do not overlap",
    ),
    Case(
        "warp-nan-displacement",
        3,
        lambda e, w: _warp(e, w, _nan_field(e, w)),
        "NaN or infinite displacement",
    ),
    Case(
        "warp-scalar-image-as-transform",
        3,
        lambda e, w: _warp(e, w, e.fixed),
        "is not a displacement field",
    ),
    Case(
        "warp-3d-image-with-2d-transform",
        3,
        lambda e, w: _warp(
            e, w, e.prev / "displacement.nii.gz", write(volume((8, 8, 8)), w / "in" / "v.nii.gz")
        ),
        "image is 3D but the transform is 2D",
    ),
    Case(
        "zero-spacing",
        3,
        lambda e, w: reg(
            e, w, None, mha_header_edit(image2d(e), w / "in" / "m.mha", "ElementSpacing", "0 1")
        ),
        "spacing",
    ),
    Case(
        "singular-direction",
        3,
        lambda e, w: reg(
            e,
            w,
            mha_header_edit(image2d(e), w / "in" / "f.mha", "TransformMatrix", "1 0 1 0"),
        ),
        "orientation",
    ),
    Case(
        "model-spacing-zero",
        3,
        lambda e, w: reg(e, w, None, None, "--model-spacing", "0"),
        "--model-spacing must be a positive number",
    ),
    Case(
        "model-spacing-nan",
        3,
        lambda e, w: reg(e, w, None, None, "--model-spacing", "nan"),
        "--model-spacing must be a positive number",
    ),
    Case(
        "model-file-spacing-negative",
        3,
        lambda e, w: reg(
            e, w, model=model_payload(w / "in" / "neg.pt", set_config(preprocessing__spacing=-1.0))
        ),
        "preprocessing.spacing must be a positive",
    ),
    Case(
        "single-slice-volume",
        3,
        lambda e, w: [
            "register",
            write(volume((1, 24, 24)), w / "in" / "f.nii.gz"),
            write(volume((1, 24, 24)), w / "in" / "m.nii.gz"),
            "--out",
            w / "prev",
            "--model",
            e.model3d,
            "--no-figure",
        ],
        "1 voxel(s) along axis 3",
    ),
    Case(
        "thin-volume-without-affine",
        3,
        lambda e, w: [
            "register",
            write(volume((5, 24, 24)), w / "in" / "f.nii.gz"),
            write(volume((5, 24, 24)), w / "in" / "m.nii.gz"),
            "--out",
            w / "prev",
            "--model",
            e.model3d,
            "--no-figure",
            "--no-affine",
        ],
        "model grid of only",
    ),
    Case(
        "thin-volume-with-affine",
        3,
        lambda e, w: [
            "register",
            write(volume((6, 24, 24)), w / "in" / "f.nii.gz"),
            write(volume((6, 24, 24)), w / "in" / "m.nii.gz"),
            "--out",
            w / "prev",
            "--model",
            e.model3d,
            "--no-figure",
        ],
        "too small for the affine pre-alignment",
    ),
    # 4. extreme intensities neither hang nor derail
    Case(
        "value-beyond-float32",
        4,
        lambda e, w: reg(e, w, None, _big(e, w, 1e300, np.float64, "big.nii.gz")),
        "beyond the float32 range",
    ),
    Case(
        "infinite-voxel",
        4,
        lambda e, w: reg(e, w, _big(e, w, np.inf, np.float32, "inf.mha")),
        "NaN or infinite voxels",
    ),
    Case(
        "largest-float32-value-registers",
        4,
        lambda e, w: reg(e, w, None, _big(e, w, 3.0e38, np.float32, "huge.nii.gz")),
        None,
        _ok_outputs(BASIC),
    ),
    # 6. every command validates its configuration before work
    Case(
        "train-list-where-object",
        6,
        lambda e, w: train(w, train_config(w, optim=[1, 2])),
        "optim must be an object",
    ),
    Case(
        "train-string-lr",
        6,
        lambda e, w: train(w, train_config(w, optim__lr="fast")),
        "optim.lr must be a positive number",
    ),
    Case(
        "train-batch-size-0",
        6,
        lambda e, w: train(w, train_config(w, optim__batch_size=0)),
        "optim.batch_size must be a whole number >= 1",
    ),
    Case(
        "train-bare-number-file",
        6,
        lambda e, w: (
            (w / "in" / "n.json").write_text("5"),
            train(w, w / "in" / "n.json"),
        )[-1],
        "must hold a JSON object",
    ),
    Case(
        "train-channels-string",
        6,
        lambda e, w: train(w, train_config(w, network={"channels": "8,16"})),
        "network.channels must be a list",
    ),
    Case(
        "train-zero-steps",
        6,
        lambda e, w: train(w, train_config(w), "--steps", "0"),
        "nothing would be trained",
    ),
    Case(
        "train-not-json",
        6,
        lambda e, w: (
            (w / "in" / "t.json").write_text("{task: registration"),
            train(w, w / "in" / "t.json"),
        )[-1],
        "is not valid JSON",
    ),
    Case(
        "train-corrupt-checkpoint",
        6,
        lambda e, w: (
            (w / "run").mkdir(),
            (w / "run" / "checkpoint.pt").write_bytes(b""),
            train(w, train_config(w)),
        )[-1],
        "the file is empty",
    ),
    Case(
        "train-malformed-checkpoint",
        6,
        lambda e, w: (
            (w / "run").mkdir(),
            torch.save({"step": 3}, w / "run" / "checkpoint.pt"),
            train(w, train_config(w)),
        )[-1],
        "is malformed",
    ),
    Case(
        "model-zero-bytes",
        6,
        lambda e, w: (
            (w / "in" / "z.pt").write_bytes(b""),
            reg(e, w, model=w / "in" / "z.pt"),
        )[-1],
        "the file is empty",
    ),
    Case(
        "model-truncated",
        6,
        lambda e, w: reg(e, w, model=truncated(e.model2d, w / "in" / "t.pt")),
        "truncated",
    ),
    Case(
        "model-not-a-pickle",
        6,
        lambda e, w: (
            (w / "in" / "x.pt").write_text("hello, not a model"),
            reg(e, w, model=w / "in" / "x.pt"),
        )[-1],
        "not a deepsim model",
    ),
    Case(
        "model-malicious-pickle",
        6,
        lambda e, w: reg(e, w, model=evil_pickle(w / "in" / "evil.pt")),
        "never loaded",
    ),
    Case(
        "model-config-not-json",
        6,
        lambda e, w: reg(
            e, w, model=model_payload(w / "in" / "c.pt", lambda p: p.update(config="{oops"))
        ),
        "is not a JSON text",
    ),
    Case(
        "model-networks-a-list",
        6,
        lambda e, w: reg(
            e, w, model=model_payload(w / "in" / "n.pt", lambda p: p.update(networks=[1, 2]))
        ),
        "holds no networks",
    ),
    Case(
        "model-spatial-dims-a-string",
        6,
        lambda e, w: reg(
            e, w, model=model_payload(w / "in" / "s.pt", set_config(spatial_dims="two"))
        ),
        "spatial_dims must be",
    ),
    Case(
        "evaluate-unknown-split",
        6,
        lambda e, w: evaluate(w, "--model", e.model2d, "--split", "tset"),
        "--split must be one of",
    ),
    Case(
        "evaluate-zero-pairs",
        6,
        lambda e, w: evaluate(w, "--model", e.model2d, "--pairs", "0"),
        "--pairs must be at least 1",
    ),
    Case(
        "evaluate-negative-pairs",
        6,
        lambda e, w: evaluate(w, "--model", e.model2d, "--pairs", "-3"),
        "--pairs must be at least 1",
    ),
    Case(
        "evaluate-negative-io-steps",
        6,
        lambda e, w: evaluate(w, "--model", e.model2d, "--io-steps", "-1"),
        "--io-steps must be >= 0",
    ),
    Case(
        "evaluate-data-a-list",
        6,
        lambda e, w: evaluate(w, "--model", e.model2d, data={"data": [1, 2]}),
        "data must be an object",
    ),
]
"""Every case; the principle numbers follow issue 13."""


def identity_warp_case() -> Case:
    """A warp through a zero field reproduces the labels (a success that must stay one)."""
    return Case(
        "warp-identity-field",
        3,
        lambda e, w: _warp(e, w, _identity_field(e, w)),
        None,
        lambda w: None,
    )


CASES.append(identity_warp_case())
