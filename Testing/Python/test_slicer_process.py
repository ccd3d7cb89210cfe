"""The registration's child process, as the panel drives it: progress arrives while the GUI
polls, Cancel kills the process at once and leaves the scene's node IDs unchanged, a failure
surfaces the command's own message, torch never loads in Slicer's process, and single-slice
volumes are registered with the 2D model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from deepsim.api import Cancelled  # noqa: E402
from DeepSimRegistrationLib.plane import PlaneFrame  # noqa: E402
from DeepSimRegistrationLib.registration import (  # noqa: E402
    OutputNodes,
    RegistrationSettings,
    applyRegistration,
    computeRegistration,
    listModels,
    startRegistration,
)
from DeepSimRegistrationLib.runner import RegistrationProcess  # noqa: E402
from slicer_stubs import add_volume, new_scene, oblique_ijk_to_ras, phantom, scene_ids  # noqa: E402

HERE = Path(__file__).resolve().parent


def poll_until(process, predicate, timeout=120.0):
    """Poll like the panel's timer until ``predicate(events so far)``; returns the events."""
    events, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        events += process.poll()
        if predicate(events):
            return events
        time.sleep(0.02)
    raise AssertionError(f"timed out; events so far: {events[-5:]}")


def test_progress_lines_become_events_while_the_child_runs():
    script = textwrap.dedent(
        """
        import sys, time
        print("deepsim-progress 0.2500 resampling", flush=True)
        print("a warning", flush=True)
        time.sleep(0.5)
        print("deepsim-progress 1.0000 done", flush=True)
        """
    )
    process = RegistrationProcess([sys.executable, "-c", script]).start()
    first = poll_until(process, lambda ev: ("progress", (0.25, "resampling")) in ev)
    assert process.state == "running"  # progress arrived before the child ended
    rest = poll_until(process, lambda ev: process.state != "running")
    events = first + rest
    assert ("log", "a warning") in events and ("progress", (1.0, "done")) in events
    assert process.state == "finished" and process.returncode == 0


def test_failure_surfaces_the_command_message(tmp_path):
    command = [sys.executable, "-m", "deepsim", "register", str(tmp_path / "missing.nii.gz")]
    command += [str(tmp_path / "moving.nii.gz"), "--out", str(tmp_path / "out"), "--progress-lines"]
    from DeepSimRegistrationLib.registration import MODULE_DIR
    from DeepSimRegistrationLib.runner import moduleEnvironment

    process = RegistrationProcess(command, env=moduleEnvironment(MODULE_DIR)).start()
    process.wait(timeout=120)
    assert process.state == "failed" and process.returncode != 0
    assert "missing.nii.gz" in process.errorMessage()


def test_errors_speak_slicer_not_command_line_flags():
    from DeepSimRegistrationLib.registration import inSlicerTerms

    text = inSlicerTerms("no CUDA GPU is available; use --device cpu or a larger --model-spacing")
    assert text == "no CUDA GPU is available; use Device: CPU or a larger Advanced > Model spacing"
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is there: the real failure below needs a machine without one")
    scene = new_scene()
    m = oblique_ijk_to_ras()
    fixed = add_volume(scene, phantom((12, 13, 14), m, seed=1), m, "fixed")
    moving = add_volume(scene, phantom((12, 13, 14), m, seed=2), m, "moving")
    job = startRegistration(
        fixed, moving, RegistrationSettings(device="cuda"), python=sys.executable
    )
    job.wait(timeout=120)
    with pytest.raises(RuntimeError) as err:
        job.result()
    assert "Device: CPU" in str(err.value) and "--" not in str(err.value)


def test_cancel_kills_the_process_at_once_and_the_scene_keeps_its_nodes():
    scene = new_scene()
    m = oblique_ijk_to_ras()
    fixed = add_volume(scene, phantom((24, 26, 28), m, seed=1), m, "fixed")
    moving = add_volume(scene, phantom((24, 26, 28), m, shift_ras=(2, 0, 0), seed=2), m, "moving")
    ids = scene_ids(scene)
    job = startRegistration(
        fixed, moving, RegistrationSettings(device="cpu", ioSteps=200), python=sys.executable
    )
    poll_until(job.process, lambda ev: any(kind == "progress" for kind, _ in ev))
    start = time.monotonic()
    job.cancel()
    assert time.monotonic() - start < 2.0
    assert job.process._process.poll() is not None  # the child is gone, not just told to stop
    assert job.state == "cancelled" and not job.workDir.exists()
    with pytest.raises(Cancelled):
        job.result()
    assert scene_ids(scene) == ids


def test_torch_never_loads_in_slicers_process(tmp_path):
    """The Slicer side (module file, Logic, Lib) starts and cancels a run without torch."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import slicer_stubs
        scene = slicer_stubs.new_scene()
        module = slicer_stubs.import_module_file()
        m = slicer_stubs.oblique_ijk_to_ras()
        a = slicer_stubs.add_volume(scene, slicer_stubs.phantom((8, 9, 10), m), m, "a")
        b = slicer_stubs.add_volume(scene, slicer_stubs.phantom((8, 9, 10), m, seed=1), m, "b")
        logic = module.DeepSimRegistrationLogic(python=sys.executable)
        p = logic.getParameterNode()
        p.fixedVolume, p.movingVolume = a, b
        assert logic.whyNotReady(p, "brain-3d") == ""
        job = logic.startRegistration(p, "brain-3d")
        job.cancel()
        assert logic.finishRegistration(job, p) is None
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def single_slice(scene, name, m, shift=(0.0, 0.0, 0.0), shape=(1, 48, 52)):
    return add_volume(scene, phantom(shape, m, shift_ras=shift, seed=3), m, name)


def test_plane_frame_keeps_oblique_geometry_and_refuses_other_planes():
    from DeepSimRegistrationLib.nodes import volumeToImage

    scene = new_scene()
    m = oblique_ijk_to_ras(spacing=(1.1, 0.9, 2.5))
    fixed = volumeToImage(single_slice(scene, "f", m))
    frame = PlaneFrame(fixed)
    shifted = m.copy()
    shifted[:3, 3] += 3.0 * m[:3, 0] / 1.1 - 2.0 * m[:3, 1] / 0.9  # in plane: 3 mm i, -2 mm j
    moving = volumeToImage(single_slice(scene, "m", shifted))
    f2, m2 = frame.to2d(fixed, "fixed"), frame.to2d(moving, "moving")
    # the same in-plane world point has the same frame coordinates in both 2D grids
    point = m @ np.array([10.0, 20.0, 0.0, 1.0])
    idx_f = np.linalg.solve(m, point)[:2][::-1]  # (j, i) tensor order
    idx_m = np.linalg.solve(shifted, point)[:2][::-1]
    xy_f = f2.grid.index_to_lps[:2, :2] @ idx_f + f2.grid.index_to_lps[:2, 2]
    xy_m = m2.grid.index_to_lps[:2, :2] @ idx_m + m2.grid.index_to_lps[:2, 2]
    np.testing.assert_allclose(xy_f, xy_m, atol=1e-9)
    # a 2D displacement along frame x becomes a 3D one along the fixed slice's i axis
    d = frame.displacementTo3d(np.tile([1.0, 0.0], (48, 52, 1)))
    np.testing.assert_allclose(
        d[0, 0, 0] * [-1, -1, 1], m[:3, 0] / np.linalg.norm(m[:3, 0]), atol=1e-6
    )
    off = m.copy()
    off[:3, 3] += 5.0 * np.cross(m[:3, 0], m[:3, 1]) / np.linalg.norm(np.cross(m[:3, 0], m[:3, 1]))
    with pytest.raises(ValueError, match="does not lie in the plane"):
        frame.to2d(volumeToImage(single_slice(scene, "off", off)), "moving")


def test_single_slice_volumes_are_registered_with_the_2d_model():
    pytest.importorskip("torch")
    if not listModels(2):
        pytest.skip("no shipped 2D model")
    scene = new_scene()
    m = oblique_ijk_to_ras(spacing=(1.0, 1.0, 3.0))
    fixed = single_slice(scene, "fixed", m)
    moving = single_slice(scene, "moving", m, shift=(0.0, 0.0, 0.0))
    moving_shifted = m.copy()
    moving_shifted[:3, 3] += 2.0 * m[:3, 0]
    moving.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(moving_shifted))
    result = computeRegistration(
        fixed, moving, RegistrationSettings(device="cpu", ioSteps=0), python=sys.executable
    )
    assert result.summary["model"] == listModels(2)[0]
    out = applyRegistration(scene, result, OutputNodes(createVolume=True))
    dims = fixed.GetImageData().GetDimensions()
    assert dims[2] == 1
    for node in (out.outputVolume, out.heatmapVolume, out.jacobianVolume):
        assert node.GetImageData().GetDimensions() == dims
    # the displacement lies in the slice plane
    normal = np.cross(m[:3, 0], m[:3, 1])
    normal_lps = normal / np.linalg.norm(normal) * [-1, -1, 1]
    assert np.abs(result.displacement @ normal_lps).max() < 1e-4
    assert np.abs(result.displacement).max() > 0.1


def test_panel_settings_reach_the_command_line():
    """Presets, the similarity override and masks go to ``deepsim register`` as its options."""
    scene = new_scene()
    m = oblique_ijk_to_ras()
    fixed = add_volume(scene, phantom((12, 13, 14), m, seed=1), m, "fixed")
    moving = add_volume(scene, phantom((12, 13, 14), m, seed=2), m, "moving")
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
    from DeepSimRegistrationLib.nodes import setScalarVolume

    setScalarVolume(scene, mask, (phantom((12, 13, 14), m) > 60).astype("float32"), m, "mask")

    def command(settings, **kwargs):
        job = startRegistration(fixed, moving, settings, python=sys.executable, **kwargs)
        job.cancel()
        return job.process.command

    from DeepSimRegistrationLib.registration import similarityChoices

    assert similarityChoices() == ("ncc", "mind", "deepsim")
    cmd = command(RegistrationSettings(preset="best", similarity="mind"), fixedMask=mask)
    assert cmd[cmd.index("--preset") + 1] == "best" and "--io-steps" not in cmd
    assert cmd[cmd.index("--similarity") + 1] == "mind"
    assert cmd[cmd.index("--fixed-mask") + 1].endswith("fixed-mask.nrrd")
    assert "--moving-mask" not in cmd
