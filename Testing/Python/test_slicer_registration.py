"""The registration on slicer-core nodes, computed by the ``deepsim`` command in a child process
(one real run shared by the tests) and applied to the scene: one transform node, outputs on the
fixed geometry that agree with the transform, inputs never overwritten, failures leave the
scene as it was, results save and reload."""

from __future__ import annotations

import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")

import DeepSimRegistrationLib.registration as reg  # noqa: E402
from deepsim.geometry import read_image  # noqa: E402
from DeepSimRegistrationLib.nodes import (  # noqa: E402
    DIVERGING_BLUE_RED_ID,
    INFERNO_ID,
    ijkToRas,
    resampleThroughTransform,
    volumeToImage,
)
from DeepSimRegistrationLib.registration import (  # noqa: E402
    OutputNodes,
    RegistrationSettings,
    applyRegistration,
    checkNodes,
    computeRegistration,
    saveOutputs,
    showHeatmap,
)
from slicer_stubs import add_volume, new_scene, oblique_ijk_to_ras, phantom, scene_ids  # noqa: E402

FIXED_SHAPE = (28, 30, 32)
MOVING_SHAPE = (26, 30, 30)


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
        ijkToRas(node),
        node.GetTransformNodeID(),
        node.GetImageData().GetMTime(),
        node.GetName(),
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


@pytest.fixture(scope="module")
def computed():
    """One real registration in a child process, shared by the tests of this file."""
    scene = new_scene()
    fixed, moving = make_pair(scene)
    before = (scene_ids(scene), snapshot(fixed), snapshot(moving))
    progress = []
    result = computeRegistration(
        fixed,
        moving,
        RegistrationSettings(device="cpu", ioSteps=2),
        progress=lambda f, m: progress.append((f, m)),
        python=sys.executable,
    )
    return scene, fixed, moving, result, progress, before


def fresh_scene_with(result):
    """A new scene holding copies of the pair, with the IDs the result refers to."""
    scene = new_scene()
    fixed, moving = make_pair(scene)
    assert (fixed.GetID(), moving.GetID()) == (result.fixedNodeID, result.movingNodeID)
    return scene, fixed, moving


def test_compute_streams_progress_and_writes_nothing(computed):
    scene, fixed, moving, result, progress, (ids, fixed_before, moving_before) = computed
    assert scene_ids(scene) == ids
    assert_same(snapshot(fixed), fixed_before)
    assert_same(snapshot(moving), moving_before)
    fractions = [f for f, _ in progress]
    assert len(progress) >= 4 and fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    assert all(isinstance(m, str) and m for _, m in progress)
    assert result.displacement.shape == (*FIXED_SHAPE, 3)
    assert result.jacobian.shape == FIXED_SHAPE and result.warped.shape == FIXED_SHAPE
    assert set(result.heatmaps) == set(reg.HEATMAP_NAMES)
    assert result.summary["io_steps"] == 2 and result.summary["device"] == "cpu"


def test_apply_gives_one_transform_and_outputs_that_agree_with_it(computed):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    before = snapshot(moving)
    out = applyRegistration(scene, result, OutputNodes(createVolume=True))
    transform = out.outputTransform
    assert transform.GetClassName() == "vtkMRMLTransformNode" and not transform.IsLinear()
    assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == 1  # no second (affine) node
    assert transform.GetParentTransformNode() is None
    roles = slicer.vtkMRMLTransformNode
    assert transform.GetNodeReferenceID(roles.GetMovingNodeReferenceRole()) == moving.GetID()
    assert transform.GetNodeReferenceID(roles.GetFixedNodeReferenceRole()) == fixed.GetID()
    assert_same(snapshot(moving), before)  # a registered volume was made: moving stays put

    for node in (out.outputVolume, out.heatmapVolume, out.jacobianVolume):
        assert node.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
        np.testing.assert_allclose(ijkToRas(node), ijkToRas(fixed), atol=1e-9)
    hd, jd = out.heatmapVolume.GetDisplayNode(), out.jacobianVolume.GetDisplayNode()
    assert hd.GetColorNodeID() == INFERNO_ID and not hd.GetAutoWindowLevel()
    assert (hd.GetWindowLevelMin(), hd.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    assert jd.GetColorNodeID() == DIVERGING_BLUE_RED_ID
    assert (jd.GetWindowLevelMin(), jd.GetWindowLevelMax()) == pytest.approx((0.0, 2.0))
    comp = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert comp.GetBackgroundVolumeID() == fixed.GetID()
    assert comp.GetForegroundVolumeID() == out.heatmapVolume.GetID()

    # the registered volume is what Slicer shows with the moving volume under the transform
    through = resampleThroughTransform(scene, volumeToImage(moving), transform, out.fixedGrid)
    warped = slicer.util.arrayFromVolume(out.outputVolume)
    pts = out.fixedGrid.world_points() + result.displacement
    grid = volumeToImage(moving).grid
    idx = pts @ grid.lps_to_index[:3, :3].T + grid.lps_to_index[:3, 3]
    inside = np.all((idx >= 1) & (idx <= np.array(MOVING_SHAPE) - 2), axis=-1)
    assert inside.mean() > 0.3
    rng = float(warped.max() - warped.min())
    assert np.abs(warped - through)[inside].max() < 5e-3 * rng

    # heatmap switching without re-running
    assert out.heatmapName == "deepsim_after" and showHeatmap(out, "ncc_before")
    np.testing.assert_allclose(
        slicer.util.arrayFromVolume(out.heatmapVolume), result.heatmaps["ncc_before"], atol=1e-6
    )


def test_without_output_volume_the_moving_volume_goes_under_the_transform(computed):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    out = applyRegistration(scene, result, OutputNodes())
    assert out.outputVolume is None
    assert moving.GetParentTransformNode() is out.outputTransform
    assert fixed.GetParentTransformNode() is None


def test_two_runs_in_a_row_with_the_first_outputs_selected(computed, tmp_path):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    first = applyRegistration(scene, result, OutputNodes(createVolume=False))
    chosen = OutputNodes(
        transform=first.outputTransform, heatmap=first.heatmapVolume, jacobian=first.jacobianVolume
    )
    # the moving volume sits under the first transform: the next run takes it without it
    checkNodes(fixed, moving, chosen)
    job = reg.startRegistration(
        fixed,
        moving,
        RegistrationSettings(device="cpu"),
        outputTransform=first.outputTransform,
        python=sys.executable,
        workDir=tmp_path,
    )
    try:
        written = read_image(job.workDir / "moving.nrrd")
        np.testing.assert_allclose(written.array, slicer.util.arrayFromVolume(moving))
        np.testing.assert_allclose(
            written.grid.ijk_to_ras(), ijkToRas(moving), atol=1e-4
        )  # its own space, not the registered one
    finally:
        job.cancel()
    assert not job.workDir.exists()
    ids = scene_ids(scene)
    second = applyRegistration(scene, result, chosen)
    assert scene_ids(scene) == ids  # no new nodes: the same ones were overwritten
    assert second.outputTransform is first.outputTransform
    assert moving.GetParentTransformNode() is first.outputTransform


@pytest.mark.parametrize("output", ["volume", "heatmap", "jacobian"])
@pytest.mark.parametrize("which", ["fixed", "moving"])
def test_outputs_never_overwrite_inputs(computed, output, which):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    node = fixed if which == "fixed" else moving
    before, ids = snapshot(node), scene_ids(scene)
    outputs = OutputNodes(**{output: node})
    with pytest.raises(ValueError, match=f"is the {which} volume"):
        checkNodes(fixed, moving, outputs)
    with pytest.raises(ValueError, match=f"is the {which} volume"):
        applyRegistration(scene, result, outputs)
    assert_same(snapshot(node), before)
    assert scene_ids(scene) == ids


def test_fixed_volume_under_the_output_transform_is_refused(computed):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    fixed.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="fixed volume is under the output transform"):
        checkNodes(fixed, moving, OutputNodes(transform=transform))


def test_failure_while_applying_removes_new_nodes(computed, monkeypatch):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    ids = scene_ids(scene)

    def broken(*args, **kwargs):
        raise RuntimeError("display failed")

    monkeypatch.setattr(reg, "showJacobianDisplay", broken)
    with pytest.raises(RuntimeError, match="display failed"):
        applyRegistration(scene, result, OutputNodes(createVolume=True))
    # only the shared colour table stays (Slicer's application has it anyway)
    assert [i for i in scene_ids(scene) if not i.startswith("vtkMRMLColorTableNode")] == ids
    assert moving.GetParentTransformNode() is None


def test_scene_closed_during_the_run_gets_nothing(computed):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    scene.Clear(0)
    with pytest.raises(ValueError, match="removed during the registration"):
        applyRegistration(scene, result)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_save_outputs_writes_files_that_reload(computed, tmp_path):
    result = computed[3]
    scene, fixed, moving = fresh_scene_with(result)
    out = applyRegistration(scene, result, OutputNodes(createVolume=True))
    storages = scene.GetNumberOfNodesByClass("vtkMRMLStorageNode")
    written = saveOutputs(out, tmp_path / "saved")
    names = {p.name for p in written}
    assert {"transform.h5", "registered.nrrd", "jacobian.nrrd", "summary.json"} <= names
    assert "similarity_deepsim_after.nrrd" in names
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert scene.GetNumberOfNodesByClass("vtkMRMLStorageNode") == storages  # nodes' own kept
    again = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    reader = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    reader.SetFileName(str(tmp_path / "saved" / "transform.h5"))
    assert reader.ReadData(again)
    p = (ijkToRas(fixed) @ np.array([10.3, 12.7, 9.2, 1.0]))[:3]
    np.testing.assert_allclose(
        again.GetTransformFromParent().TransformPoint(*p),
        out.outputTransform.GetTransformFromParent().TransformPoint(*p),
        atol=1e-4,
    )
