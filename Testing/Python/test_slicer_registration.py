"""``registerVolumes`` end to end on slicer-core nodes with a small model: outputs on the fixed
geometry with their display settings, the warped volume agrees with the transform and with the
library, inputs untouched, cancel and failure leave the scene as it was."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
import vtk  # noqa: E402

import DeepSimRegistrationLib.registration as reg  # noqa: E402
from deepsim.api import Cancelled  # noqa: E402
from deepsim.register import warp_image  # noqa: E402
from DeepSimRegistrationLib import (  # noqa: E402
    DIVERGING_BLUE_RED_ID,
    INFERNO_ID,
    registerVolumes,
    showHeatmap,
    volume_to_image,
)
from DeepSimRegistrationLib.nodes import ijk_to_ras, numpy_matrix  # noqa: E402
from slicer_stubs import (  # noqa: E402
    add_volume,
    model_for_tests,
    new_scene,
    oblique_ijk_to_ras,
    phantom,
    scene_ids,
)

FIXED_SHAPE = (28, 30, 32)
MOVING_SHAPE = (26, 30, 30)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return model_for_tests(tmp_path_factory.mktemp("slicer_models"))


def make_pair(scene):
    fm = oblique_ijk_to_ras(spacing=(1.3, 1.1, 1.4))
    mm = oblique_ijk_to_ras(
        spacing=(1.2, 1.25, 1.3), origin=(14.0, -30.0, 6.0), angles=(0.25, -0.1, 0.3)
    )
    fixed = add_volume(scene, phantom(FIXED_SHAPE, fm, seed=1), fm, "fixed")
    moving = add_volume(
        scene, phantom(MOVING_SHAPE, mm, shift_ras=(3.0, -2.0, 1.0), seed=2), mm, "moving"
    )
    return fixed, moving


def snapshot(node):
    """Everything about an input node that must not change."""
    return (
        slicer.util.arrayFromVolume(node).copy(),
        ijk_to_ras(node),
        node.GetTransformNodeID(),
        node.GetImageData().GetMTime(),
        node.GetName(),
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


def test_register_end_to_end(model_path):
    scene = new_scene()
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    fixed, moving = make_pair(scene)
    before_fixed, before_moving = snapshot(fixed), snapshot(moving)
    stages = []
    out = registerVolumes(
        fixed,
        moving,
        model=str(model_path),
        device="cpu",
        affine=True,
        createOutputVolume=True,
        progress=lambda f, m: stages.append((f, m)),
    )
    # inputs untouched
    assert_same(snapshot(fixed), before_fixed)
    assert_same(snapshot(moving), before_moving)
    # progress is monotone and ends at 1
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # transform chain: grid on top, affine child, reference roles
    grid, aff = out.outputTransform, out.affineTransform
    assert aff.GetParentTransformNode() is grid and grid.GetParentTransformNode() is None
    assert not grid.IsLinear() and aff.IsLinear()
    for node in (grid, aff):
        assert (
            node.GetNodeReferenceID(slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole())
            == moving.GetID()
        )
        assert (
            node.GetNodeReferenceID(slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole())
            == fixed.GetID()
        )
    m = vtk.vtkMatrix4x4()
    aff.GetMatrixTransformFromParent(m)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(numpy_matrix(m), flip @ out.result.affine @ flip, atol=1e-9)
    display = grid.GetDisplayNode()
    assert display.GetVisualizationMode() == slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID
    assert display.GetRegionNode() is fixed and display.GetVisibility2D()

    # outputs on the fixed geometry, with their display settings
    fixed_dims = fixed.GetImageData().GetDimensions()
    for node in (out.outputVolume, out.heatmapVolume, out.jacobianVolume):
        assert node.GetImageData().GetDimensions() == fixed_dims
        np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(fixed), atol=1e-9)
        assert node.GetParentTransformNode() is None
    hd = out.heatmapVolume.GetDisplayNode()
    assert hd.GetColorNodeID() == INFERNO_ID and scene.GetNodeByID(INFERNO_ID) is not None
    assert not hd.GetAutoWindowLevel()
    assert (hd.GetWindowLevelMin(), hd.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    jd = out.jacobianVolume.GetDisplayNode()
    assert jd.GetColorNodeID() == DIVERGING_BLUE_RED_ID
    assert (jd.GetWindowLevelMin(), jd.GetWindowLevelMax()) == pytest.approx((0.0, 2.0))
    assert jd.GetWindow() == pytest.approx(2.0) and jd.GetLevel() == pytest.approx(1.0)
    np.testing.assert_allclose(
        slicer.util.arrayFromVolume(out.jacobianVolume), out.result.jacobian.array, atol=1e-6
    )
    comp = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert comp.GetBackgroundVolumeID() == fixed.GetID()
    assert comp.GetForegroundVolumeID() == out.heatmapVolume.GetID()
    assert comp.GetForegroundOpacity() == pytest.approx(0.5)

    # the registered volume agrees with the library's complete displacement (SimpleITK)
    warped = slicer.util.arrayFromVolume(out.outputVolume)
    fixed_img, moving_img = volume_to_image(fixed), volume_to_image(moving)
    want = warp_image(moving_img, fixed_img.grid, out.result.displacement, "linear").array
    pts = fixed_img.grid.world_points() + out.result.displacement
    lps_to_idx = moving_img.grid.lps_to_index
    idx = pts @ lps_to_idx[:3, :3].T + lps_to_idx[:3, 3]
    inside = np.all((idx >= 1) & (idx <= np.array(MOVING_SHAPE) - 2), axis=-1)
    assert inside.mean() > 0.3
    rng = float(moving_img.array.max() - moving_img.array.min())
    assert np.abs(warped - want)[inside].max() < 5e-3 * rng

    # heatmap switching without re-running
    assert out.heatmapName == "deepsim_after"
    assert showHeatmap(out, "ncc_before")
    np.testing.assert_allclose(
        slicer.util.arrayFromVolume(out.heatmapVolume),
        out.result.heatmaps["ncc_before"].array,
        atol=1e-6,
    )
    assert out.heatmapVolume.GetAttribute("DeepSim.heatmap") == "ncc_before"

    # a second run into the same nodes creates no new nodes
    ids = scene_ids(scene)
    out2 = registerVolumes(
        fixed,
        moving,
        model=str(model_path),
        device="cpu",
        affine=False,
        outputTransform=grid,
        outputVolume=out.outputVolume,
        heatmapVolume=out.heatmapVolume,
        jacobianVolume=out.jacobianVolume,
    )
    assert scene_ids(scene) == ids
    assert out2.affineTransform is aff
    np.testing.assert_allclose(
        numpy_matrix(aff.GetMatrixTransformToParent()), np.eye(4), atol=1e-12
    )

    # an input under the output transform is refused (overwriting it would move the input)
    moving.SetAndObserveTransformNodeID(aff.GetID())
    with pytest.raises(ValueError, match="under the output transform"):
        registerVolumes(fixed, moving, model=str(model_path), device="cpu", outputTransform=grid)


@pytest.mark.parametrize("cancel_after", [1, 3, 6])
def test_cancel_leaves_scene_unchanged(model_path, cancel_after):
    scene = new_scene()
    fixed, moving = make_pair(scene)
    ids, before = scene_ids(scene), snapshot(moving)
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) >= cancel_after

    with pytest.raises(Cancelled):
        registerVolumes(
            fixed,
            moving,
            model=str(model_path),
            device="cpu",
            createOutputVolume=True,
            shouldCancel=should_cancel,
        )
    assert scene_ids(scene) == ids
    assert_same(snapshot(moving), before)


def test_failure_after_computation_removes_new_nodes(model_path, monkeypatch):
    scene = new_scene()
    fixed, moving = make_pair(scene)
    ids = scene_ids(scene)

    def broken(*args, **kwargs):
        raise RuntimeError("resampling failed")

    monkeypatch.setattr(reg, "resample_through_chain", broken)
    with pytest.raises(RuntimeError, match="resampling failed"):
        registerVolumes(fixed, moving, model=str(model_path), device="cpu", createOutputVolume=True)
    assert scene_ids(scene) == ids


def test_bad_inputs_are_refused_before_any_work(model_path):
    scene = new_scene()
    fixed, moving = make_pair(scene)
    ids = scene_ids(scene)
    with pytest.raises(ValueError, match="different"):
        registerVolumes(fixed, fixed, model=str(model_path))
    with pytest.raises(ValueError, match="device"):
        registerVolumes(fixed, moving, model=str(model_path), device="tpu")
    with pytest.raises(ValueError, match="both"):
        registerVolumes(None, moving)
    assert scene_ids(scene) == ids
