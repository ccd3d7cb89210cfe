"""Property tests (hypothesis) of the input checks: random shapes, voxel types, spacings,
orientations, NaN/Inf placements and truncations."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsim.geometry import Grid, Image, read_image, to_sitk
from deepsim.inputs import check_labels, check_sitk_geometry
from deepsim.preprocess import check_finite_nonconstant
from oblique import rotation as oblique_rotation

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.uint8, np.int16, np.float32, np.float64]


def rotation(angles: list[float]) -> np.ndarray:
    """A proper rotation from Euler angles (1 or 3 of them -> 2D or 3D)."""
    return oblique_rotation(2 if len(angles) == 1 else 3, angles)


@st.composite
def grids(draw):
    dims = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(4, 11), min_size=dims, max_size=dims)))
    spacing = np.array(draw(st.lists(st.floats(0.3, 3.0), min_size=dims, max_size=dims)))
    angles = draw(
        st.lists(
            st.floats(-3.1, 3.1), min_size=3 if dims == 3 else 1, max_size=3 if dims == 3 else 1
        )
    )
    origin = draw(st.lists(st.floats(-200, 200), min_size=dims, max_size=dims))
    m = np.eye(dims + 1)
    m[:dims, :dims] = rotation(angles) @ np.diag(spacing)
    m[:dims, dims] = origin
    return Grid(shape, m)


@st.composite
def images(draw):
    grid = draw(grids())
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).uniform(0, 200, grid.shape).astype(dtype)
    arr.flat[0], arr.flat[-1] = 0, 100  # never constant
    return Image(arr, grid)


@SETTINGS
@given(image=images(), fraction=st.floats(0.02, 0.98), ext=st.sampled_from([".nii.gz", ".nii"]))
def test_complete_files_read_back_and_truncated_ones_are_refused(image, fraction, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"img{ext}"
        sitk.WriteImage(to_sitk(image), str(path))
        back = read_image(path, "moving image")
        assert np.array_equal(back.array, image.array)
        assert np.allclose(back.grid.index_to_lps, image.grid.index_to_lps, atol=1e-4)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ValueError, match=r"cannot read moving image .*img"):
            read_image(path, "moving image")


@SETTINGS
@given(image=images(), data=st.data())
def test_every_nan_and_inf_is_counted(image, data):
    arr = image.array.astype(np.float32)
    n = data.draw(st.integers(0, min(5, arr.size - 2)))
    where = data.draw(st.lists(st.integers(1, arr.size - 2), min_size=n, max_size=n, unique=True))
    for i, pos in enumerate(where):
        arr.flat[pos] = [np.nan, np.inf, -np.inf][i % 3]
    if n:
        with pytest.raises(ValueError, match=f"has {n} NaN or infinite voxels"):
            check_finite_nonconstant(arr, "fixed image")
    else:
        check_finite_nonconstant(arr, "fixed image")


@SETTINGS
@given(value=st.floats(3.5e38, 1e308), image=images())
def test_values_beyond_float32_are_refused(value, image):
    arr = image.array.astype(np.float64)
    arr.flat[arr.size // 2] = value
    with pytest.raises(ValueError, match="beyond the float32 range"):
        check_finite_nonconstant(arr, "moving image")


@st.composite
def label_maps(draw):
    image = draw(images())
    n_labels = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).integers(0, n_labels + 1, image.grid.shape)
    arr.flat[0] = 1  # some foreground
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64]))
    return image, Image(arr.astype(dtype), image.grid)


@SETTINGS
@given(pair=label_maps())
def test_whole_number_labels_on_the_grid_pass(pair):
    image, labels = pair
    check_labels(labels, image, "fixed labels")


@SETTINGS
@given(pair=label_maps(), frac=st.floats(0.01, 0.99), data=st.data())
def test_fractional_labels_are_refused(pair, frac, data):
    image, labels = pair
    arr = labels.array.astype(np.float32)
    arr.flat[data.draw(st.integers(0, arr.size - 1))] += np.float32(frac)
    if np.all(arr == np.round(arr)):  # the fraction vanished in float32 rounding
        return
    with pytest.raises(ValueError, match="fractional values"):
        check_labels(Image(arr, labels.grid), image, "fixed labels")


@SETTINGS
@given(pair=label_maps(), axis=st.integers(0, 2), shift=st.floats(0.01, 50.0))
def test_labels_off_the_grid_are_refused(pair, axis, shift):
    image, labels = pair
    d = image.grid.spatial_dims
    m = labels.grid.index_to_lps.copy()
    m[axis % d, d] += shift * float(image.grid.spacing.min())
    with pytest.raises(ValueError, match="origin"):
        check_labels(Image(labels.array, Grid(labels.grid.shape, m)), image, "moving labels")
    m = labels.grid.index_to_lps.copy()
    m[:d, axis % d] *= 1.0 + shift / 5  # at least 0.2 %: beyond the 0.1 % tolerance
    with pytest.raises(ValueError, match="spacing|orientations|origin"):
        check_labels(Image(labels.array, Grid(labels.grid.shape, m)), image, "moving labels")


@SETTINGS
@given(grid=grids(), axis=st.integers(0, 2), bad=st.sampled_from([0.0, -1.0, np.nan, np.inf]))
def test_unusable_spacing_is_refused(grid, axis, bad):
    ref = grid.reference()
    spacing = list(ref.GetSpacing())
    spacing[axis % len(spacing)] = bad
    ok = ref.GetSpacing()
    check_sitk_geometry(ref, "fixed image")
    fake = _FakeGeometry(ref, spacing=spacing)
    with pytest.raises(ValueError, match="spacing"):
        check_sitk_geometry(fake, "fixed image")
    assert ref.GetSpacing() == ok


@SETTINGS
@given(grid=grids(), pair=st.permutations([0, 1, 2]))
def test_degenerate_orientation_is_refused(grid, pair):
    ref = grid.reference()
    d = ref.GetDimension()
    direction = np.asarray(ref.GetDirection()).reshape(d, d)
    a, b = [p for p in pair if p < d][:2]
    direction[:, a] = direction[:, b]  # two axes the same way
    fake = _FakeGeometry(ref, direction=tuple(direction.ravel()))
    with pytest.raises(ValueError, match="degenerate orientation"):
        check_sitk_geometry(fake, "moving image")


class _FakeGeometry:
    """An image's geometry with one field replaced: ITK itself refuses to hold such values, but
    files can carry them (and other readers pass them on)."""

    def __init__(self, image, **fields):
        self._image, self._fields = image, fields

    def GetDimension(self):
        return self._image.GetDimension()

    def GetSpacing(self):
        return self._fields.get("spacing", self._image.GetSpacing())

    def GetOrigin(self):
        return self._fields.get("origin", self._image.GetOrigin())

    def GetDirection(self):
        return self._fields.get("direction", self._image.GetDirection())
