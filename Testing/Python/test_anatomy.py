"""Tests of deepsim.training.anatomy (real templates on the common grid) and deepsim.training.benchdata.

The MGH reader, the grid geometry and the label mappings are tested without data. Tests that
need a data package are skipped when it is missing; when it is installed the cache is really
built, in a temporary ``DEEPSIM_CACHE``.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from deepsim.training import anatomy
from deepsim.training.anatomy import (
    GRID_SHAPE,
    available,
    common_scheme,
    list_anatomies,
    load_anatomy,
    read_mgh,
    reference_image,
    slices,
    tissue_labels,
)
from deepsim.training.benchdata import pair_generator, semi_synthetic_pairs, template_pairs
from deepsim.warp import warp

NEEDS = {name: pytest.mark.skipif(not available(name), reason=f"{name} data package missing") for name in list_anatomies()}  # fmt: skip  # noqa: E501


def dice(a, b, label: int) -> float:
    a, b = np.asarray(a) == label, np.asarray(b) == label
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache directory for this module: the first load_anatomy builds it."""
    path = tmp_path_factory.mktemp("deepsim_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPSIM_CACHE", str(path))
        yield path


# ------------------------------------------------------------------------------------------
# without data
# ------------------------------------------------------------------------------------------


def test_reference_grid_is_ras_box() -> None:
    ref = reference_image()
    assert ref.GetSize() == (96, 112, 96)
    # voxel (0, 0, 0) at RAS (-96, -132, -78) = LPS (96, 132, -78); last at RAS (94, 90, 112)
    assert ref.TransformIndexToPhysicalPoint((0, 0, 0)) == (96.0, 132.0, -78.0)
    assert ref.TransformIndexToPhysicalPoint((95, 111, 95)) == (-94.0, -90.0, 112.0)
    assert sitk.GetArrayFromImage(ref).shape == GRID_SHAPE


def write_mgh(path, data: np.ndarray, spacing, mdc_cols, c_ras) -> None:
    """Minimal MGH writer (x fastest), for the reader's test."""
    width, height, depth = data.shape
    header = struct.pack(">7i", 1, width, height, depth, 1, 3, 0) + struct.pack(">h", 1)
    header += struct.pack(">15f", *spacing, *np.asarray(mdc_cols).T.flatten(), *c_ras)
    header += b"\0" * (284 - len(header))
    body = data.astype(">f4").flatten(order="F").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + body)


def test_read_mgh_geometry_and_data(tmp_path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (x, y, z) = (i, j, k)
    # LIA like FreeSurfer's conformed space: columns x -> -R, y -> -S, z -> +A
    mdc = np.array([[-1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float).T  # columns
    write_mgh(tmp_path / "t.mgz", data, (2.0, 2.0, 2.0), mdc, (10.0, 20.0, 30.0))
    image = read_mgh(tmp_path / "t.mgz")
    assert image.GetSize() == (4, 5, 6)
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    assert np.array_equal(array, data.transpose(2, 1, 0))
    # vox2ras = M [ijk] + c_ras - M dims/2, M = mdc * spacing
    ijk = np.array([1, 2, 3])
    lin = mdc * 2.0
    ras = lin @ ijk + np.array([10.0, 20.0, 30.0]) - lin @ (np.array([4, 5, 6]) / 2)
    lps = image.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk))
    assert np.allclose(lps, ras * np.array([-1, -1, 1]))


def test_tissue_label_mapping_without_data() -> None:
    aseg = np.array([0, 2, 3, 4, 10, 16, 41, 42, 43, 8, 7, 24, 17, 30])
    assert tissue_labels("fsaverage", "tissue", aseg).tolist() == [
        0,
        2,
        1,
        3,
        1,
        2,
        2,
        1,
        3,
        1,
        2,
        3,
        1,
        0,
    ]  # noqa: E501
    assert tissue_labels("fsaverage", "cortex", aseg).tolist() == [
        0,
        2,
        1,
        2,
        2,
        2,
        2,
        1,
        2,
        2,
        2,
        2,
        2,
        2,
    ]  # noqa: E501
    assert tissue_labels("mni2009a", "tissue", np.array([0, 1, 2, 3])).tolist() == [0, 3, 1, 2]
    ho = np.array([0, 1, 48, 100])
    assert tissue_labels("mni6asym", "cortex", ho).tolist() == [0, 1, 1, 2]
    assert tissue_labels("mni6asym", "brain", ho).tolist() == [0, 1, 1, 1]
    assert common_scheme(["fsaverage", "mni2009a"]) == "tissue"
    assert common_scheme(["fsaverage", "mni6asym"]) == "cortex"
    assert common_scheme(["mni2009a", "mni6asym"]) == "brain"
    with pytest.raises(ValueError, match="tissue_labels.*not available"):
        tissue_labels("mni6asym", "tissue", ho)
    with pytest.raises(ValueError, match="unknown anatomy"):
        load_anatomy("oasis")


def test_slices_shapes() -> None:
    image = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    labels = (image * 4).astype(np.int64)
    for axis, hw in ((0, (7, 8)), (1, (6, 8)), (2, (6, 7))):
        im2, lab2 = slices(image, labels, axis, [1, 3])
        assert im2.shape == (2, *hw) and lab2.shape == (2, *hw)
        assert np.array_equal(im2[1], np.take(image, 3, axis=axis))
    with pytest.raises(ValueError, match="slices"):
        slices(image, labels, 0, [6])


def test_missing_package_message(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DEEPSIM_CACHE", str(tmp_path))
    monkeypatch.setattr(anatomy, "_files", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install"):
        load_anatomy("fsaverage")


def test_pair_generator_independent_streams() -> None:
    a = torch.rand(4, generator=pair_generator(0, 1))
    assert torch.equal(a, torch.rand(4, generator=pair_generator(0, 1)))
    assert not torch.equal(a, torch.rand(4, generator=pair_generator(1, 0)))


# ------------------------------------------------------------------------------------------
# with data: builds the cache
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [pytest.param(n, marks=NEEDS[n]) for n in list_anatomies()])
def test_load_anatomy_builds_cache(cache, name: str) -> None:
    image, labels, info = load_anatomy(name)
    assert (cache / f"anatomy_{name}_2mm_v1.npz").is_file()
    assert image.shape == GRID_SHAPE and labels.shape == GRID_SHAPE
    assert image.dtype == np.float32 and np.issubdtype(labels.dtype, np.integer)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    brain = labels > 0
    # the brain lies inside the box: no label on the outer faces, a plausible volume (8 ml/voxel)
    for axis in range(3):
        assert not np.take(brain, [0, -1], axis=axis).any()
    assert 0.9e6 < brain.sum() * 8 < 2.2e6  # mm^3
    assert float(image[brain].mean()) > 3 * float(image[~brain].mean())
    assert info["licence"] and info["source"] and set(np.unique(labels)) <= set(info["label_names"])
    # second call reads the cache and gives the same arrays
    image2, labels2, info2 = load_anatomy(name)
    assert np.array_equal(image, image2) and np.array_equal(labels, labels2)
    assert info2["label_names"] == info["label_names"]


@NEEDS["fsaverage"]
def test_fsaverage_orientation(cache) -> None:
    _, labels, _ = load_anatomy("fsaverage")
    x_left = np.nonzero(labels == 3)[2].mean()  # Left-Cerebral-Cortex
    x_right = np.nonzero(labels == 42)[2].mean()
    assert x_left < 40 < 56 < x_right  # axis 2 runs left -> right, midline near x index 48
    z_brainstem = np.nonzero(labels == 16)[0].mean()
    z_cortex = np.nonzero(labels == 3)[0].mean()
    assert z_brainstem < z_cortex  # axis 0 runs inferior -> superior


@NEEDS["fsaverage"]
@NEEDS["mni2009a"]
def test_inter_template_tissue_dice(cache) -> None:
    fs = tissue_labels("fsaverage", "tissue")
    mni = tissue_labels("mni2009a", "tissue")
    for label in (1, 2):  # GM, WM: roughly aligned, far from perfect
        assert 0.45 < dice(fs, mni, label) < 0.9


@NEEDS["fsaverage"]
@pytest.mark.parametrize("dims", [2, 3])
def test_semi_synthetic_pairs(cache, dims: int) -> None:
    pairs = list(
        semi_synthetic_pairs("fsaverage", 2 if dims == 2 else 1, seed=4, spatial_dims=dims)
    )
    shape = GRID_SHAPE if dims == 3 else GRID_SHAPE[1:]
    for pair in pairs:
        assert pair["fixed"].shape == (1, 1, *shape) and pair["disp"].shape == (1, dims, *shape)
        assert float(pair["fixed"].min()) >= 0 and float(pair["fixed"].max()) <= 1
        moved = warp(pair["moving_labels"].float(), pair["disp"], mode="nearest").long()
        fixed, moving = pair["fixed_labels"].numpy(), pair["moving_labels"].numpy()
        for label in (2, 3, 41, 42):  # WM and cortex
            assert dice(moved.numpy(), fixed, label) > 0.95
            assert dice(moving, fixed, label) < dice(moved.numpy(), fixed, label) - 0.02
    again = next(semi_synthetic_pairs("fsaverage", 1, seed=4, spatial_dims=dims))
    assert all(torch.equal(again[k], pairs[0][k]) for k in ("fixed", "moving", "disp"))


@NEEDS["fsaverage"]
@NEEDS["mni2009a"]
def test_template_pairs_2d(cache) -> None:
    pairs = template_pairs(["fsaverage", "mni2009a"], spatial_dims=2)
    assert [(p["fixed_name"], p["moving_name"]) for p in pairs] == [
        ("fsaverage", "mni2009a"),
        ("mni2009a", "fsaverage"),
    ]
    pair = pairs[0]
    assert pair["scheme"] == "tissue" and pair["fixed"].shape == (1, 1, *GRID_SHAPE[1:])
    assert set(torch.unique(pair["fixed_labels"]).tolist()) == {0, 1, 2, 3}
    gm = dice(pair["fixed_labels"].numpy(), pair["moving_labels"].numpy(), 1)
    assert 0.4 < gm < 0.9
