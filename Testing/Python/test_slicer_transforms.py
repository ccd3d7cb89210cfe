"""The output grid transform on real MRML nodes (slicer-core), checked against deepsim's own
warping, and its save/reload round trip: oblique, anisotropic, non-zero-origin grids throughout."""

from __future__ import annotations

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
    displacementToGridTransform,
    ijkToRas,
    resampleThroughTransform,
    volumeToImage,
    vtkMatrix,
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


def mm_displacement(disp_vox: np.ndarray, grid: Grid, affine=None) -> np.ndarray:
    """``(3, *shape)`` voxel field -> ``(*shape, 3)`` LPS mm, the library's complete mapping."""
    return full_displacement(disp_vox, grid, grid, np.eye(4) if affine is None else affine)


def test_grid_transform_matches_torch_warp():
    scene = new_scene()
    m = oblique_ijk_to_ras()
    grid = Grid.from_ijk_to_ras(SHAPE, m)
    image = phantom(SHAPE, m)
    disp = smooth_field(SHAPE, 2.5)
    expected = warp(torch.from_numpy(image)[None, None], torch.from_numpy(disp)[None])[0, 0].numpy()
    displacement = mm_displacement(disp, grid)

    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "field")
    displacementToGridTransform(displacement, grid, node)
    got = slicer_resample(scene, image, m, node, m, SHAPE)
    mask = inside_mask(disp, 0.01)
    assert mask.mean() > 0.5
    err = np.abs(got - expected)[mask].max()
    assert err < 1e-2 * (image.max() - image.min()) and err < 0.5, err

    # the same check must fail for the classic mistakes (wrong sign, components reversed)
    displacementToGridTransform(-displacement, grid, node)
    wrong = slicer_resample(scene, image, m, node, m, SHAPE)
    assert np.abs(wrong - expected)[mask].max() > 20 * max(err, 0.05)
    displacementToGridTransform(displacement[..., ::-1].copy(), grid, node)
    wrong = slicer_resample(scene, image, m, node, m, SHAPE)
    assert np.abs(wrong - expected)[mask].max() > 20 * max(err, 0.05)


def test_constant_displacement_moves_content_the_right_way():
    """deepsim: warped(x) = moving(x + d). A constant d = +10 mm R makes the fixed world point x
    read the moving point x + 10 R, so content moves by -10 mm along R."""
    scene = new_scene()
    m = oblique_ijk_to_ras()
    grid = Grid.from_ijk_to_ras(SHAPE, m)
    d_ras = np.array([10.0, 0.0, 0.0])
    displacement = np.broadcast_to(LPS_RAS_4[:3, :3] @ d_ras, (*SHAPE, 3)).astype(np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "constant")
    displacementToGridTransform(displacement, grid, node)
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


def _affine_case():
    """A fixed grid, a coarser model grid in its space, a smooth field and a known affine,
    composed by the library into one complete displacement on the fixed grid."""
    fixed = Grid.from_ijk_to_ras(SHAPE, oblique_ijk_to_ras())
    mgrid = model_grid(fixed, 2.0, 4)
    disp = smooth_field(mgrid.shape, 1.5, seed=3)
    c, s = np.cos(0.12), np.sin(0.12)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.05, 0.97, 1.0])
    centre = fixed.corners().mean(axis=0)
    affine[:3, 3] = centre - affine[:3, :3] @ centre + np.array([2.0, -3.0, 1.5])
    return fixed, full_displacement(disp, mgrid, fixed, affine)


def world_mapping(node, points_ras: np.ndarray) -> np.ndarray:
    """Where the node's FromWorld sends each RAS point."""
    t = vtk.vtkGeneralTransform()
    node.GetTransformFromWorld(t)
    return np.array([t.TransformPoint(*p) for p in points_ras])


def test_one_node_holds_the_affine_and_the_field():
    """One transform node maps every fixed voxel centre x to x + d(x), affine included."""
    scene = new_scene()
    fixed, displacement = _affine_case()
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "DeepSim transform")
    displacementToGridTransform(displacement, fixed, node)
    assert node.GetParentTransformNode() is None and not node.IsLinear()
    idx = np.stack(np.meshgrid(*[np.arange(1, n - 1, 3) for n in SHAPE], indexing="ij"), -1)
    idx = idx.reshape(-1, 3)
    pts = idx @ fixed.linear.T + fixed.index_to_lps[:3, 3]
    got = world_mapping(node, pts @ LPS_RAS_4[:3, :3].T)
    want = (pts + displacement[tuple(idx.T)]) @ LPS_RAS_4[:3, :3].T
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_resampling_through_the_node_matches_library_warp():
    """The volume resampled through the node equals deepsim's ``warp_image`` with the library's
    complete displacement (SimpleITK), inside the moving field of view."""
    scene = new_scene()
    fixed, displacement = _affine_case()
    moving_m = oblique_ijk_to_ras(
        spacing=(1.1, 1.0, 1.4), origin=(10.0, -28.0, 5.0), angles=(0.1, 0.2, -0.1)
    )
    moving_shape = (24, 28, 30)
    moving = Image(phantom(moving_shape, moving_m), Grid.from_ijk_to_ras(moving_shape, moving_m))
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    displacementToGridTransform(displacement, fixed, node)
    before = scene_ids(scene)
    got = resampleThroughTransform(scene, moving, node, fixed)
    assert scene_ids(scene) == before  # temporary nodes removed
    want = warp_image(moving, fixed, displacement, "linear").array
    pts = fixed.world_points() + displacement
    idx = pts @ moving.grid.lps_to_index[:3, :3].T + moving.grid.lps_to_index[:3, 3]
    mask = np.all((idx >= 1) & (idx <= np.array(moving_shape) - 2), axis=-1)
    assert mask.mean() > 0.3
    rng = moving.array.max() - moving.array.min()
    assert np.abs(got - want)[mask].max() < 1e-3 * rng


def _between_voxels(grid: Grid, n: int = 200) -> np.ndarray:
    """RAS points between the voxel centres, where the interpolation mode matters."""
    idx = np.random.default_rng(0).uniform(1, np.array(grid.shape) - 2, (n, 3))
    return (idx @ grid.linear.T + grid.index_to_lps[:3, 3]) @ LPS_RAS_4[:3, :3].T


@pytest.mark.parametrize("suffix", [".h5", ".nii.gz"])
def test_saved_transform_reloads_to_the_same_mapping(tmp_path, suffix):
    """Slicer's reader restores a grid transform with its own interpolation (cubic); the node
    must already use it, or the reloaded mapping moves between the voxel centres."""
    scene = new_scene()
    fixed, displacement = _affine_case()
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "DeepSim transform")
    displacementToGridTransform(displacement, fixed, node)
    points = _between_voxels(fixed)
    before = world_mapping(node, points)

    path = tmp_path / f"transform{suffix}"
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    again = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    reader = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    reader.SetFileName(str(path))
    assert reader.ReadData(again)
    np.testing.assert_allclose(world_mapping(again, points), before, atol=1e-4)


def test_scene_round_trip_keeps_the_mapping_and_the_moving_volume_under_it(tmp_path):
    scene = new_scene()
    fixed, displacement = _affine_case()
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "DeepSim transform")
    displacementToGridTransform(displacement, fixed, node)
    moving = add_volume(scene, phantom(SHAPE, fixed.ijk_to_ras()), fixed.ijk_to_ras(), "moving")
    moving.SetAndObserveTransformNodeID(node.GetID())
    points = _between_voxels(fixed)
    before = world_mapping(node, points)
    for n, name in ((node, "transform.h5"), (moving, "moving.nrrd")):
        n.AddDefaultStorageNode()
        n.GetStorageNode().SetFileName(str(tmp_path / name))
        assert n.GetStorageNode().WriteData(n)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Connect()
    moving2 = loaded.GetFirstNodeByName("moving")
    assert moving2.GetParentTransformNode().GetName() == "DeepSim transform"
    np.testing.assert_allclose(
        world_mapping(moving2.GetParentTransformNode(), points), before, atol=1e-4
    )


def test_volume_to_image_world_space_and_inputs_untouched():
    scene = new_scene()
    m = oblique_ijk_to_ras()
    array = phantom(SHAPE, m)
    node = add_volume(scene, array, m, "input")
    plain = volumeToImage(node)
    np.testing.assert_allclose(plain.grid.ijk_to_ras(), m, atol=1e-12)
    np.testing.assert_array_equal(plain.array, array)

    linear = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_parent = np.eye(4)
    to_parent[:3, 3] = [5.0, -2.0, 7.0]
    linear.SetMatrixTransformToParent(vtkMatrix(to_parent))
    node.SetAndObserveTransformNodeID(linear.GetID())
    moved = volumeToImage(node)
    np.testing.assert_allclose(moved.grid.ijk_to_ras(), to_parent @ m, atol=1e-9)

    # non-linear parent: a hardened temporary copy; the input keeps everything
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    displacementToGridTransform(
        np.ones((*SHAPE, 3), np.float32), Grid.from_ijk_to_ras(SHAPE, m), grid
    )
    node.SetAndObserveTransformNodeID(grid.GetID())
    ids = scene_ids(scene)
    mtime = node.GetImageData().GetMTime()
    warped = volumeToImage(node)
    assert scene_ids(scene) == ids
    assert node.GetParentTransformNode() is grid
    assert node.GetImageData().GetMTime() == mtime
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    np.testing.assert_allclose(ijkToRas(node), m)
    assert warped.array.std() > 1.0

    # a direct parent that is excluded (the previous result this run replaces) is skipped
    np.testing.assert_allclose(volumeToImage(node, excludeTransform=grid).array, array)
