"""Every conversion between voxel indices, LPS and RAS, on oblique anisotropic grids with non-zero
origins, against SimpleITK as the reference."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import oblique_grid, rotation
from deepsim.geometry import (
    Grid,
    Image,
    from_sitk,
    model_grid,
    overlap_fraction,
    resample,
    sample_on_grid,
    to_sitk,
)

SHAPES = {2: (13, 17), 3: (7, 9, 11)}


def _sitk_image(dims):
    shape = SHAPES[dims]
    img = sitk.GetImageFromArray(np.random.default_rng(0).random(shape).astype(np.float32))
    img.SetSpacing([1.3, 0.7, 2.1][:dims])
    img.SetOrigin([-20.5, 14.0, 33.3][:dims])
    img.SetDirection(tuple(rotation(dims).ravel()))
    return img


@pytest.mark.parametrize("dims", [2, 3])
def test_tensor_index_to_lps_matches_simpleitk(dims):
    img = _sitk_image(dims)
    grid = Grid.from_sitk(img)
    assert grid.shape == SHAPES[dims]
    rng = np.random.default_rng(1)
    for _ in range(5):
        idx = rng.random(dims) * np.array(grid.shape)  # tensor order
        expected = img.TransformContinuousIndexToPhysicalPoint(tuple(idx[::-1]))
        got = grid.index_to_lps[:dims, :dims] @ idx + grid.index_to_lps[:dims, dims]
        assert np.allclose(got, expected, atol=1e-9)
        back = grid.lps_to_index[:dims, :dims] @ got + grid.lps_to_index[:dims, dims]
        assert np.allclose(back, idx, atol=1e-9)
    assert np.allclose(grid.spacing, np.array(img.GetSpacing())[::-1])


@pytest.mark.parametrize("dims", [2, 3])
def test_sitk_round_trip(dims):
    img = _sitk_image(dims)
    image = from_sitk(img)
    out = to_sitk(image)
    assert out.GetSize() == img.GetSize()
    assert np.allclose(out.GetSpacing(), img.GetSpacing())
    assert np.allclose(out.GetOrigin(), img.GetOrigin())
    assert np.allclose(out.GetDirection(), img.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(out), image.array)


def test_ras_conversions():
    grid = oblique_grid((7, 9, 11))
    ijk_to_ras = grid.ijk_to_ras()
    # RAS of voxel ijk = flip(LPS of tensor index kji)
    ijk = np.array([2.0, 5.0, 3.0])
    lps = grid.index_to_lps[:3, :3] @ ijk[::-1] + grid.index_to_lps[:3, 3]
    ras = ijk_to_ras[:3, :3] @ ijk + ijk_to_ras[:3, 3]
    assert np.allclose(ras, lps * [-1, -1, 1])
    again = Grid.from_ijk_to_ras(grid.shape, ijk_to_ras)
    assert np.allclose(again.index_to_lps, grid.index_to_lps)


def test_ras_matches_slicer_convention_for_a_nifti_style_image():
    """An LPS-identity SimpleITK image has IJKToRAS diag(-sx, -sy, sz) with a negated origin."""
    img = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    img.SetSpacing((0.5, 2.0, 3.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    m = Grid.from_sitk(img).ijk_to_ras()
    assert np.allclose(m[:3, :3], np.diag([-0.5, -2.0, 3.0]))
    assert np.allclose(m[:3, 3], [-10.0, -20.0, 30.0])


@pytest.mark.parametrize("dims", [2, 3])
def test_model_grid_covers_the_field_of_view(dims):
    ref = oblique_grid(SHAPES[dims])
    grid = model_grid(ref, 1.1, multiple=8)
    assert all(n % 8 == 0 for n in grid.shape)
    assert np.allclose(grid.spacing, 1.1)
    idx = ref.corners() @ grid.lps_to_index[:dims, :dims].T + grid.lps_to_index[:dims, dims]
    assert np.all(idx >= -0.5) and np.all(idx <= np.array(grid.shape) - 0.5)
    # axes are the reference's axes (a signed permutation of its direction)
    rel = (grid.linear / grid.spacing).T @ (ref.linear / ref.spacing)
    assert np.allclose(np.sort(np.abs(rel), axis=1)[:, -1], 1.0)


def test_model_grid_reorients_to_the_model_orientation():
    """A file stored LIA (FreeSurfer) gets the same model axes as one stored LPS."""
    lia = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)  # columns: L, I, A in LPS
    m = np.eye(4)
    m[:3, :3] = lia[:, ::-1] * 1.0  # tensor order columns
    m[:3, 3] = [-50, 40, 60]
    ref = Grid((64, 48, 40), m)
    grid = model_grid(ref, 2.0)
    # model tensor axes (k, j, i) run along (S, P, L) in LPS: the identity orientation
    assert np.allclose(grid.linear / 2.0, np.eye(3)[:, ::-1])


@pytest.mark.parametrize("dims", [2, 3])
def test_sample_on_grid_matches_simpleitk_resample(dims):
    src = oblique_grid(SHAPES[dims])
    pts = src.world_points()
    coef = np.array([0.7, -1.2, 0.4][:dims])
    image = Image((pts @ coef + 5).astype(np.float32), src)
    dst = model_grid(src, 0.9, multiple=2)
    got = sample_on_grid(image.array[None], src, dst)[0]
    ref = resample(image, dst).array  # SimpleITK linear, 0 outside
    dst_idx = dst.world_points() @ src.lps_to_index[:dims, :dims].T + src.lps_to_index[:dims, dims]
    inside = np.all((dst_idx >= 0) & (dst_idx <= np.array(src.shape) - 1), axis=-1)
    assert inside.sum() > 10
    assert np.allclose(got[inside], ref[inside], atol=1e-3)
    # inside the grid a linear function is reproduced exactly
    assert np.allclose(got[inside], (dst.world_points() @ coef + 5)[inside], atol=1e-3)


def test_resample_through_affine_is_the_resampling_convention():
    grid = oblique_grid((16, 18, 14))
    pts = grid.world_points()
    image = Image((pts @ np.array([1.0, 2.0, -1.0])).astype(np.float32), grid)
    affine = np.eye(4)
    affine[:3, 3] = [1.5, -2.0, 0.5]  # fixed point x -> moving point x + t
    out = resample(image, grid, affine).array
    expected = (pts + [1.5, -2.0, 0.5]) @ np.array([1.0, 2.0, -1.0])
    assert np.allclose(out[4:-4, 4:-4, 4:-4], expected[4:-4, 4:-4, 4:-4], atol=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_resample_extrapolates_the_nearest_edge_voxel_when_asked(dims):
    """Through a shift of 3 voxels along the oblique grid's first axis, the last 3 rows fall
    outside the image: the default pads them with ``default``; ``extrapolate`` repeats the image's
    last row there (its nearest voxels), and inside both agree."""
    grid = oblique_grid((12, 14, 10)[:dims])
    image = Image(np.random.default_rng(2).random(grid.shape).astype(np.float32), grid)
    affine = np.eye(dims + 1)
    affine[:dims, dims] = 3 * grid.linear[:, 0]  # fixed index i -> moving index i + 3 (axis 0)
    padded = resample(image, grid, affine, default=-7.0).array
    extended = resample(image, grid, affine, extrapolate=True).array
    assert np.allclose(padded[:-3], image.array[3:], atol=1e-5)
    assert np.allclose(extended[:-3], padded[:-3])
    assert np.all(padded[-2:] == -7.0)
    assert np.allclose(extended[-2:], image.array[-1:], atol=1e-5)


def test_overlap_fraction():
    a = oblique_grid((10, 10, 10))
    assert overlap_fraction(a, a) == 1.0
    far = np.eye(4)
    far[:3, 3] = 1000.0
    assert overlap_fraction(a, a, far) == 0.0


def test_grid_rejects_bad_matrices():
    with pytest.raises(ValueError, match="4x4"):
        Grid((4, 4, 4), np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        Grid((4, 4), np.zeros((3, 3)))


def test_sample_on_a_single_slice_grid_hits_the_slice():
    """A unit-size axis in the destination (the overview's display slice) samples at that slice,
    not half a voxel beside it; values linear in LPS are reproduced exactly."""
    src = oblique_grid((12, 14, 10))
    pts = src.world_points()
    values = (0.7 * pts[..., 0] - 0.3 * pts[..., 1] + 0.2 * pts[..., 2])[None].astype(np.float32)
    m = src.index_to_lps.copy()
    m[:3, 3] = src.index_to_lps[:3] @ np.array([5.0, 3.0, 2.0, 1.0])  # start inside src
    dst = Grid((1, 6, 5), m)
    out = sample_on_grid(values, src, dst)[0]
    q = dst.world_points()
    expected = 0.7 * q[..., 0] - 0.3 * q[..., 1] + 0.2 * q[..., 2]
    assert np.allclose(out, expected, atol=1e-3)
