"""The registration pipeline in physical space: field mapping, outputs that agree, bad input."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import blob_image, make_model_file, oblique_grid
from deepsim.api import RegistrationOptions
from deepsim.geometry import Grid, Image, model_grid
from deepsim.modelio import load_model
from deepsim.register import field_of_view, full_displacement, register, warp_image


def _smooth_field(shape, amplitude, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, amplitude, (len(shape),) + tuple(max(2, n // 6) for n in shape))
    zoom = [1] + [n / c for n, c in zip(shape, coarse.shape[1:])]
    return ndimage.zoom(coarse, zoom, order=1)[(slice(None),) + tuple(slice(0, n) for n in shape)]


@pytest.mark.parametrize("dims", [2, 3])
def test_full_displacement_is_affine_after_field(dims):
    fixed = oblique_grid((20, 24, 18)[:dims])
    grid = model_grid(fixed, 1.6, multiple=4)
    u = _smooth_field(grid.shape, 1.5)
    affine = np.eye(dims + 1)
    affine[:dims, :dims] += np.random.default_rng(2).normal(0, 0.05, (dims, dims))
    affine[:dims, dims] = [2.0, -1.0, 0.5][:dims]
    disp = full_displacement(u, grid, fixed, affine)
    pts = fixed.world_points()
    rng = np.random.default_rng(3)
    for flat in rng.choice(int(np.prod(fixed.shape)), 20, replace=False):
        idx = np.unravel_index(flat, fixed.shape)
        x = pts[idx]
        ci = grid.lps_to_index[:dims, :dims] @ x + grid.lps_to_index[:dims, dims]
        u_vox = [
            ndimage.map_coordinates(u[c], ci[:, None], order=1, mode="nearest")[0]
            for c in range(dims)
        ]
        expected = affine[:dims, :dims] @ (x + grid.linear @ np.array(u_vox)) + affine[:dims, dims]
        assert np.allclose(x + disp[idx], expected, atol=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_written_field_reproduces_warped_image(dims, tmp_path, tiny_model_2d, tiny_model_3d):
    """SimpleITK resampling the moving image with displacement.nii.gz gives warped.nii.gz."""
    from deepsim.outputs import write_outputs

    fixed = blob_image(oblique_grid((24, 28, 22)[:dims]))
    moving_grid = oblique_grid(
        (20, 26, 24)[:dims], spacing=[1.1, 1.4, 0.95][:dims], origin=[10, -28, 9][:dims]
    )
    moving = blob_image(moving_grid, centre_shift=[2.0, -1.5, 1.0][:dims])
    model = load_model(tiny_model_2d if dims == 2 else tiny_model_3d)
    # no affine: the engine itself must move the blob, so the written field is a real one
    opts = RegistrationOptions(device="cpu", io_steps=5, io_lr=0.5, affine=False)
    result = register(fixed, moving, model, opts)
    assert np.abs(result.model_disp).max() > 0.05
    write_outputs(result, tmp_path, figure=False)
    field = sitk.ReadImage(str(tmp_path / "displacement.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    from deepsim.geometry import to_sitk

    out = sitk.Resample(
        to_sitk(moving),
        sitk.ReadImage(str(tmp_path / "warped.nii.gz")),
        transform,
        sitk.sitkLinear,
        0.0,
    )
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped.nii.gz")))
    assert np.abs(sitk.GetArrayFromImage(out) - warped).max() < 1e-3 * np.ptp(moving.array)
    ref = sitk.ReadImage(str(tmp_path / "warped.nii.gz"))
    assert np.allclose(ref.GetDirection(), to_sitk(fixed).GetDirection())
    assert np.allclose(ref.GetOrigin(), to_sitk(fixed).GetOrigin())


def _constant_model(path, dims, vector_vox, spacing):
    """A model whose network outputs the constant displacement ``vector_vox`` (model voxels)."""
    make_model_file(path, dims, spacing=spacing)
    state = torch.load(path, weights_only=True)
    reg = state["networks"]["registration"]
    last = max(k for k in reg if k.startswith("head.") and k.endswith(".weight"))
    reg[last].zero_()
    reg[last.replace("weight", "bias")].copy_(torch.tensor(vector_vox, dtype=torch.float32))
    torch.save(state, path)
    return path


@pytest.mark.parametrize("dims", [2, 3])
def test_constant_translation_moves_content_the_right_way(dims, tmp_path):
    """Moving = fixed shifted by t mm; a model field of +t maps every fixed point onto its moving
    counterpart, so warped == fixed, while -t doubles the misalignment."""
    fixed_grid = oblique_grid((28, 30, 26)[:dims])
    t = np.array([3.0, -2.0, 4.0][:dims])
    fixed = blob_image(fixed_grid)
    moving = blob_image(fixed_grid, centre_shift=t)
    spacing = 1.5
    mgrid = model_grid(fixed_grid, spacing, 8)
    u_vox = np.linalg.solve(mgrid.linear, t)  # t in model voxel steps
    errors = {}
    for sign in (1, -1):
        path = _constant_model(tmp_path / f"c{sign}.pt", dims, sign * u_vox, spacing)
        res = register(
            fixed,
            moving,
            load_model(path),
            RegistrationOptions(device="cpu", affine=False, heatmaps=False, io_steps=0),
        )
        inner = tuple(slice(5, -5) for _ in range(dims))
        errors[sign] = np.abs(res.warped.array[inner] - fixed.array[inner]).mean()
        assert np.allclose(res.displacement[inner], sign * t, atol=1e-3)
    assert errors[1] < 0.05 * errors[-1]


@pytest.mark.parametrize("dims", [2, 3])
def test_field_of_view_marks_where_the_model_grid_sees_the_image(dims):
    """The moving image's field of view on the model grid, through an affine that shifts it by
    whole model voxels along the grid's own (oblique) axes: the shifted-out slab and a margin
    of 2 voxels are outside, the rest inside; the identity sees everything."""
    grid = model_grid(oblique_grid((20, 24, 18)[:dims]), 2.0, 2)
    image = Grid(grid.shape, grid.index_to_lps.copy())
    affine = np.eye(dims + 1)
    # fixed point x -> moving point x + 3 voxels along the grid's axis 0
    affine[:dims, dims] = 3 * grid.linear[:, 0]
    assert field_of_view(image, image, None) is None
    inside = field_of_view(image, image, affine)
    n0 = grid.shape[0]
    # moving index i + 3 must lie in [0, n0 - 1]: rows n0 - 3 .. n0 - 1 are out, plus the margin
    assert inside[: n0 - 3 - 2].all()
    assert not inside[n0 - 3 - 2 :].any()


def test_prealignment_keeps_the_identity_when_it_cannot_improve_on_it():
    """Sparse cells with their own illumination and noise in each frame, not moved: the moments
    start misleads the optimiser (tens of pixels off without the check), the identity is kept."""
    import json

    from deepsim.affine import affine_prealign
    from deepsim.training.datasets import make_source

    cfg = json.loads((Path(__file__).parents[2] / "configs/eval-microscopy-2d.json").read_text())
    src = make_source(cfg["data"], "test", cfg["seed"])
    p = src.pair(7)
    fixed, moving = (Image(p[k][0, 0].numpy(), src.grid) for k in ("fixed", "moving"))
    a = affine_prealign(fixed, moving)
    corners = src.grid.corners()
    moved = corners @ a[:2, :2].T + a[:2, 2]
    assert np.abs(moved - corners).max() < 2.0


def test_known_affine_is_recovered_by_prealignment():
    grid = oblique_grid((40, 44, 36), spacing=[1.0, 1.0, 1.0])
    fixed = blob_image(grid)
    moving = blob_image(grid, centre_shift=[4.0, -3.0, 2.0])
    model = load_model(make_model_file(__import__("tempfile").mkdtemp() + "/m.pt", 3))
    res = register(fixed, moving, model, RegistrationOptions(device="cpu", heatmaps=False))
    assert np.allclose(
        res.affine[:3, 3] + (res.affine[:3, :3] - np.eye(3)) @ grid.corners().mean(0),
        [4.0, -3.0, 2.0],
        atol=0.7,
    )


def test_deepsim_judge_is_per_model_and_keeps_the_field_it_rates_higher(tiny_model_2d):
    """A model outside ``presets.DEEPSIM_JUDGE`` keeps the engine's field without rating it; asked
    to judge, registration rates both fields by the model's DeepSim and keeps the higher one."""
    grid = oblique_grid((32, 36))
    fixed, moving = blob_image(grid), blob_image(grid, centre_shift=[2.0, 1.0])
    model = load_model(tiny_model_2d)
    # no affine: the engine has a motion to recover (the affine would take it all)
    opts = RegistrationOptions(device="cpu", affine=False, heatmaps=False, warped=False)
    default = register(fixed, moving, model, opts).summary
    assert default.engine_kept == "engine" and default.deepsim_judge is None
    opts.deepsim_judge = True
    judged = register(fixed, moving, model, opts).summary
    rated = judged.deepsim_judge
    assert set(rated) == {"network", "engine"}
    assert judged.engine_kept == max(rated, key=rated.get)


def test_summary_and_heatmaps(tiny_model_2d):
    grid = oblique_grid((32, 36))
    fixed = blob_image(grid)
    moving = blob_image(grid, centre_shift=[2.0, 1.0])
    labels_f = Image((fixed.array > 150).astype(np.int16), grid)
    labels_m = Image((moving.array > 150).astype(np.int16), grid)
    res = register(
        fixed,
        moving,
        load_model(tiny_model_2d),
        RegistrationOptions(device="cpu"),
        labels_f,
        labels_m,
    )
    s = res.summary.to_dict()
    for key in (
        "runtime_s",
        "device",
        "model",
        "folding_percent",
        "similarity_ncc_before",
        "similarity_ncc_after",
        "similarity_deepsim_before",
        "similarity_deepsim_after",
        "dice_before",
        "dice_after",
    ):
        assert key in s
    assert set(res.heatmaps) == {"ncc_before", "ncc_after", "deepsim_before", "deepsim_after"}
    for img in res.heatmaps.values():
        assert img.array.shape == grid.shape and np.isfinite(img.array).all()
    assert s["dice_after"] > s["dice_before"]  # the affine alone fixes a translation


def test_cancel_raises_and_reports(tiny_model_2d):
    from deepsim.api import Cancelled

    grid = oblique_grid((32, 32))
    calls = []
    with pytest.raises(Cancelled):
        register(
            blob_image(grid),
            blob_image(grid, [1, 1]),
            load_model(tiny_model_2d),
            RegistrationOptions(device="cpu"),
            progress=lambda f, m: calls.append(m),
            should_cancel=lambda: len(calls) >= 2,
        )


@pytest.mark.parametrize(
    "fixed_array, message",
    [
        (np.full((32, 32), 3.0, np.float32), "constant"),
        (np.where(np.eye(32) > 0, np.nan, 1.0).astype(np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused(fixed_array, message, tiny_model_2d):
    grid = oblique_grid((32, 32))
    with pytest.raises(ValueError, match=message):
        register(Image(fixed_array, grid), blob_image(grid), load_model(tiny_model_2d))


def test_non_overlapping_images_are_refused(tiny_model_2d):
    grid = oblique_grid((32, 32))
    far = oblique_grid((32, 32), origin=[900.0, 900.0])
    with pytest.raises(ValueError, match="do not overlap"):
        register(
            blob_image(grid),
            blob_image(far),
            load_model(tiny_model_2d),
            RegistrationOptions(affine=False),
        )


def test_too_large_pair_says_how_much_memory(tiny_model_3d):
    grid = oblique_grid((32, 32, 32))
    with pytest.raises(MemoryError, match="coarser model grid"):
        register(
            blob_image(grid),
            blob_image(grid),
            load_model(tiny_model_3d),
            RegistrationOptions(device="cpu", model_spacing=0.02),
        )


def test_warp_image_labels_nearest():
    grid = oblique_grid((20, 20))
    labels = Image(np.random.default_rng(0).integers(0, 4, (20, 20)).astype(np.int16), grid)
    disp = np.zeros((20, 20, 2), np.float32) + 0.3
    out = warp_image(labels, grid, disp, "nearest")
    assert set(np.unique(out.array)) <= {0, 1, 2, 3}
