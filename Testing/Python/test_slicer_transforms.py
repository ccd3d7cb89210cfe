"""The grid transform and the grid + affine chain on real MRML nodes (slicer-core), checked
against deepsim's own warping: oblique, anisotropic, non-zero-origin grids throughout."""

from __future__ import annotations

import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
torch = pytest.importorskip("torch")
import vtk  # noqa: E402

from deepsim.geometry import Grid, Image, model_grid  # noqa: E402
from deepsim.register import full_displacement, warp_image  # noqa: E402
from deepsim.warp import warp  # noqa: E402
from DeepSimRegistrationLib.nodes import (  # noqa: E402
    LPS_RAS_4,
    affine_to_linear_transform,
    ijk_to_ras,
    make_transform_chain,
    model_field_to_grid_transform,
    resample_through_chain,
    volume_to_image,
)
from slicer_stubs import add_volume, new_scene, oblique_ijk_to_ras, phantom, scene_ids  # noqa: E402

SHAPE = (20, 24, 28)  # K, J, I


def smooth_field(shape, amplitude, seed=0) -> np.ndarray:
    """``(3, *shape)`` smooth random displacement in voxels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 4, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    return (amplitude * up / up.abs().max())[0].numpy().astype(np.float32)


def slicer_resample(scene, array, matrix, transformNode, reference_matrix, shape):
    """Resample ``array`` (on ``matrix``) under ``transformNode`` onto a reference grid."""
    moving = add_volume(scene, array, matrix, "moving")
    moving.SetAndObserveTransformNodeID(transformNode.GetID())
    ref = add_volume(scene, np.zeros(shape, np.float32), reference_matrix, "reference")
    out = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(moving, ref)
    return slicer.util.arrayFromVolume(out).astype(np.float32)


def inside_mask(disp: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Voxels whose displaced position stays inside the grid (where padding does not matter)."""
    shape = disp.shape[1:]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    pos = idx + disp
    return np.all(
        [(pos[a] >= margin) & (pos[a] <= shape[a] - 1 - margin) for a in range(3)], axis=0
    )


def test_grid_transform_matches_torch_warp():
    scene = new_scene()
    m = oblique_ijk_to_ras()
    grid = Grid.from_ijk_to_ras(SHAPE, m)
    image = phantom(SHAPE, m)
    disp = smooth_field(SHAPE, 2.5)
    expected = warp(torch.from_numpy(image)[None, None], torch.from_numpy(disp)[None])[0, 0].numpy()

    node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "field")
    model_field_to_grid_transform(disp, grid, node)
    got = slicer_resample(scene, image, m, node, m, SHAPE)
    mask = inside_mask(disp, 0.01)
    assert mask.mean() > 0.5
    err = np.abs(got - expected)[mask].max()
    assert err < 1e-2 * (image.max() - image.min()) and err < 0.5, err

    # the same check must fail for the classic mistakes (wrong sign, channels not reversed)
    model_field_to_grid_transform(-disp, grid, node)
    wrong = slicer_resample(scene, image, m, node, m, SHAPE)
    assert np.abs(wrong - expected)[mask].max() > 20 * max(err, 0.05)
    model_field_to_grid_transform(disp[::-1].copy(), grid, node)
    wrong = slicer_resample(scene, image, m, node, m, SHAPE)
    assert np.abs(wrong - expected)[mask].max() > 20 * max(err, 0.05)


def test_constant_displacement_moves_content_the_right_way():
    """deepsim: warped(x) = moving(x + d). A constant d = +10 mm R makes the fixed world point x
    read the moving point x + 10 R, so content moves by -10 mm along R."""
    scene = new_scene()
    m = oblique_ijk_to_ras()
    grid = Grid.from_ijk_to_ras(SHAPE, m)
    d_ras = np.array([10.0, 0.0, 0.0])
    # voxel displacement along tensor axes (k, j, i) whose world vector is d_ras
    u_tensor = np.linalg.solve(grid.index_to_ras()[:3, :3], d_ras)
    disp = np.broadcast_to(u_tensor[:, None, None, None], (3, *SHAPE)).astype(np.float32).copy()
    node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "constant")
    model_field_to_grid_transform(disp, grid, node)
    centre = (m @ np.array([13.5, 11.5, 9.5, 1.0]))[:3]
    mapped = np.array(node.GetTransformFromParent().TransformPoint(*centre))
    np.testing.assert_allclose(mapped - centre, d_ras, atol=1e-4)

    big = (40, 40, 40)
    m_big = oblique_ijk_to_ras(spacing=(1.0, 1.0, 1.0), origin=(-20.0, -20.0, -20.0))
    blob_centre = (m_big @ np.array([19.5, 19.5, 19.5, 1.0]))[:3]
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in big], indexing="ij")
    ras = np.stack([i, j, k, np.ones_like(i)], -1) @ m_big.T
    blob = np.exp(-0.5 * (((ras[..., :3] - blob_centre) / 4.0) ** 2).sum(-1)).astype(np.float32)
    out = slicer_resample(scene, blob, m_big, node, m_big, big)
    com = (ras[..., :3] * out[..., None]).sum((0, 1, 2)) / out.sum()
    np.testing.assert_allclose(com - blob_centre, -d_ras, atol=0.3)


def _chain_case():
    """A fixed grid, a coarser model grid in its space, a smooth field and a known affine."""
    fixed_m = oblique_ijk_to_ras()
    fixed = Grid.from_ijk_to_ras(SHAPE, fixed_m)
    mgrid = model_grid(fixed, 2.0, 4)
    disp = smooth_field(mgrid.shape, 1.5, seed=3)
    c, s = np.cos(0.12), np.sin(0.12)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.05, 0.97, 1.0])
    centre = fixed.corners().mean(axis=0)
    affine[:3, 3] = centre - affine[:3, :3] @ centre + np.array([2.0, -3.0, 1.5])
    result = types.SimpleNamespace(model_disp=disp, model_grid=mgrid, affine=affine)
    return fixed, mgrid, disp, affine, result


def test_affine_parent_composes_as_the_library():
    """Moving under the affine node under the grid node maps x -> A(x + U(x)), as deepsim does."""
    scene = new_scene()
    fixed, mgrid, disp, affine, result = _chain_case()
    gridNode, affineNode, created = make_transform_chain(scene, result)
    assert affineNode.GetParentTransformNode() is gridNode
    assert gridNode.GetParentTransformNode() is None
    assert set(created) == {gridNode, affineNode}

    expected = full_displacement(disp, mgrid, fixed, affine)  # (*fixed, 3) LPS mm
    from_world = vtk.vtkGeneralTransform()
    affineNode.GetTransformFromWorld(from_world)
    idx = np.stack(
        np.meshgrid(*[np.arange(2, n - 2, 3) for n in SHAPE], indexing="ij"), -1
    ).reshape(-1, 3)
    pts_lps = idx @ fixed.linear.T + fixed.index_to_lps[:3, 3]
    for t, p in zip(idx, pts_lps):
        x_ras = LPS_RAS_4[:3, :3] @ p
        got = np.array(from_world.TransformPoint(*x_ras))
        want = LPS_RAS_4[:3, :3] @ (p + expected[tuple(t)])
        np.testing.assert_allclose(got, want, atol=2e-3)

    # the other order (affine on top) is a different mapping: the check above is meaningful
    wrong = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "wrong order")
    model_field_to_grid_transform(disp, mgrid, wrong)
    wrongAffine = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    affine_to_linear_transform(affine, wrongAffine)
    wrong.SetAndObserveTransformNodeID(wrongAffine.GetID())
    wrong_world = vtk.vtkGeneralTransform()
    wrong.GetTransformFromWorld(wrong_world)
    errs = []
    for t, p in zip(idx, pts_lps):
        got = np.array(wrong_world.TransformPoint(*(LPS_RAS_4[:3, :3] @ p)))
        errs.append(np.abs(got - LPS_RAS_4[:3, :3] @ (p + expected[tuple(t)])).max())
    assert max(errs) > 0.2


def test_chain_resampling_matches_library_warp():
    """The volume resampled through the chain equals deepsim's ``warp_image`` with the
    library's complete displacement (SimpleITK), inside the moving field of view."""
    scene = new_scene()
    fixed, mgrid, disp, affine, result = _chain_case()
    moving_m = oblique_ijk_to_ras(
        spacing=(1.1, 1.0, 1.4), origin=(10.0, -28.0, 5.0), angles=(0.1, 0.2, -0.1)
    )
    moving_shape = (24, 28, 30)
    moving = Image(phantom(moving_shape, moving_m), Grid.from_ijk_to_ras(moving_shape, moving_m))
    _, affineNode, _ = make_transform_chain(scene, result)
    before = scene_ids(scene)
    got = resample_through_chain(scene, moving, affineNode, fixed)
    assert scene_ids(scene) == before  # temporary nodes removed
    displacement = full_displacement(disp, mgrid, fixed, affine)
    want = warp_image(moving, fixed, displacement, "linear").array
    # voxels whose mapped point is well inside the moving image
    pts = fixed.world_points() + displacement
    idx = pts @ moving.grid.lps_to_index[:3, :3].T + moving.grid.lps_to_index[:3, 3]
    mask = np.all((idx >= 1) & (idx <= np.array(moving_shape) - 2), axis=-1)
    assert mask.mean() > 0.3
    rng = moving.array.max() - moving.array.min()
    assert np.abs(got - want)[mask].max() < 1e-3 * rng


def test_volume_to_image_world_space_and_inputs_untouched():
    scene = new_scene()
    m = oblique_ijk_to_ras()
    array = phantom(SHAPE, m)
    node = add_volume(scene, array, m, "input")
    plain = volume_to_image(node)
    np.testing.assert_allclose(plain.grid.ijk_to_ras(), m, atol=1e-12)
    np.testing.assert_array_equal(plain.array, array)

    linear = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_parent = np.eye(4)
    to_parent[:3, 3] = [5.0, -2.0, 7.0]
    from DeepSimRegistrationLib.nodes import vtk_matrix

    linear.SetMatrixTransformToParent(vtk_matrix(to_parent))
    node.SetAndObserveTransformNodeID(linear.GetID())
    moved = volume_to_image(node)
    np.testing.assert_allclose(moved.grid.ijk_to_ras(), to_parent @ m, atol=1e-9)

    # non-linear parent: a hardened temporary copy; the input keeps everything
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    model_field_to_grid_transform(
        np.ones((3, *SHAPE), np.float32), Grid.from_ijk_to_ras(SHAPE, m), grid
    )
    node.SetAndObserveTransformNodeID(grid.GetID())
    ids = scene_ids(scene)
    mtime = node.GetImageData().GetMTime()
    warped = volume_to_image(node)
    assert scene_ids(scene) == ids
    assert node.GetParentTransformNode() is grid
    assert node.GetImageData().GetMTime() == mtime
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    np.testing.assert_allclose(ijk_to_ras(node), m)
    assert warped.array.std() > 1.0
