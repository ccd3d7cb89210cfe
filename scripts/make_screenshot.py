"""Render the README screenshot and the icons headlessly (slicer-core, no Slicer application).

``Resources/Screenshots/slice_heatmap.png``: the sample pair registered as the module does it
(``computeRegistration``: the ``deepsim register`` command in a child process, with the default
shipped 3D model; ``applyRegistration``: the nodes), rendered through ``vtkMRMLSliceLogic``: the fixed volume as background,
the DeepSim heatmap as foreground at opacity 0.5, and the deformed grid of the output transform
drawn on top with matplotlib (slicer-core does not render transform displays).

``Resources/DeepSimRegistration.png`` and ``DeepSimRegistration/Resources/Icons/DeepSimRegistration.png``:
the 128x128 extension and module icon.

Run: ``.venv/bin/python scripts/make_screenshot.py`` (after ``scripts/make_sample_data.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_icons() -> None:
    """A deformed grid over an inferno similarity blob: registration + heatmap at a glance."""
    y, x = np.mgrid[-1:1:256j, -1:1:256j]
    heat = np.exp(-((x / 0.75) ** 2 + (y / 0.9) ** 2) * 1.6) * (
        0.75 + 0.25 * np.cos(6 * np.arctan2(y, x))
    )
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(heat, cmap="inferno", extent=(-1, 1, -1, 1), vmin=0, vmax=1)
    t = np.linspace(-1, 1, 200)
    for c in np.linspace(-0.8, 0.8, 7):
        warp = 0.12 * np.exp(-(t**2 + c**2) * 2.5)
        ax.plot(t + warp * np.sin(np.pi * c), c + warp * np.cos(np.pi * t), color="#7fd8ff", lw=1.1)
        ax.plot(c + warp * np.cos(np.pi * t), t + warp * np.sin(np.pi * c), color="#7fd8ff", lw=1.1)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.axis("off")
    for path in (
        REPO / "Resources" / "DeepSimRegistration.png",
        REPO / "DeepSimRegistration" / "Resources" / "Icons" / "DeepSimRegistration.png",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    plt.close(fig)


def load_volume(scene, path: Path, name: str):
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"cannot read {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0, 120)
    del slicer
    return node


def render_slice(scene, size=(512, 512)):
    """Blend of the slice composite node's layers in an axial slice view, as (H, W, 3) uint8,
    plus the slice node's XYToRAS matrix."""
    import slicer
    from vtk.util import numpy_support

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    slice_node = slicer.vtkMRMLSliceNode()
    slice_node.SetName("Red")
    slice_node.SetLayoutName("Red")
    slice_node.SetSingletonTag("Red")
    slice_node.SetDimensions(size[0], size[1], 1)
    scene.AddNode(slice_node)
    axial = slice_node.GetSliceToRAS()  # the axial preset is not registered in slicer-core
    for r, row in enumerate([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]):
        for c, v in enumerate(row):
            axial.SetElement(r, c, v)
    slice_node.UpdateMatrices()
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(app_logic)
    logic.SetMRMLScene(scene)
    logic.SetSliceNode(slice_node)
    logic.FitSliceToBackground()
    slice_node.SetSliceOffset(slice_node.GetSliceOffset() + 12.0)
    logic.UpdatePipeline() if hasattr(logic, "UpdatePipeline") else None
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    img = producer.GetOutputDataObject(0)
    w, h, _ = img.GetDimensions()
    arr = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)
    xy_to_ras = np.array(
        [[slice_node.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)]
    )
    return arr[::-1, :, :3].copy(), xy_to_ras


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "Resources" / "Screenshots" / "slice_heatmap.png"
    )
    parser.add_argument("--icons-only", action="store_true")
    args = parser.parse_args(argv)
    make_icons()
    if args.icons_only:
        return
    import slicer
    import vtk

    sys.path.insert(0, str(REPO / "Testing" / "Python"))
    from DeepSimRegistrationLib.nodes import ijkToRas
    from DeepSimRegistrationLib.registration import (
        OutputNodes,
        RegistrationSettings,
        applyRegistration,
        computeRegistration,
    )

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    color_logic = slicer.vtkMRMLColorLogic()  # built-in colour tables (Grey, ...)
    color_logic.SetMRMLScene(scene)
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    data = REPO / "DeepSimRegistration" / "Resources" / "SampleData"
    fixed = load_volume(scene, data / "DeepSimPhantomFixed.nrrd", "fixed")
    moving = load_volume(scene, data / "DeepSimPhantomMoving.nrrd", "moving")
    heatmap = "deepsim_after"
    result = computeRegistration(
        fixed, moving, RegistrationSettings(device="cpu"), python=sys.executable
    )
    out = applyRegistration(scene, result, OutputNodes(createVolume=True), heatmap)
    print("model:", out.summary["model"], "| folding %:", out.summary["folding_percent"])
    rgb, xy_to_ras = render_slice(scene)

    # the deformed grid: fixed-space grid lines in this slice, mapped by the registration
    # (fixed point -> moving point) through the very transform node placed in the scene
    from_world = vtk.vtkGeneralTransform()
    out.outputTransform.GetTransformFromWorld(from_world)
    ras_to_xy = np.linalg.inv(xy_to_ras)
    ras_to_ijk = np.linalg.inv(ijkToRas(fixed))
    dims = np.array(fixed.GetImageData().GetDimensions())
    h, w, _ = rgb.shape
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rgb)
    step = 24
    t = np.linspace(0, max(w, h), 400)
    for c in range(step // 2, max(w, h), step):
        for xs, ys in ((t, np.full_like(t, c)), (np.full_like(t, c), t)):
            pts = []
            for x, y in zip(xs, ys):
                ras = xy_to_ras @ np.array([x, h - 1 - y, 0.0, 1.0])
                ijk = ras_to_ijk @ ras
                if np.any(ijk[:3] < 0) or np.any(ijk[:3] > dims - 1):
                    pts.append((np.nan, np.nan))  # draw the grid over the fixed volume only
                    continue
                mapped = np.array([*from_world.TransformPoint(*ras[:3]), 1.0])
                # show the displacement in the slice plane (exaggerated x2 for visibility)
                xy = ras_to_xy @ (ras + 2.0 * (mapped - ras))
                pts.append((xy[0], h - 1 - xy[1]))
            pts = np.array(pts)
            ax.plot(pts[:, 0], pts[:, 1], color="#7fd8ff", lw=0.6, alpha=0.8)
    ax.set_xlim(0, w - 1)
    ax.set_ylim(h - 1, 0)
    ax.axis("off")
    label = {"deepsim_after": "DeepSim", "ncc_after": "NCC"}[heatmap]
    ax.text(
        8,
        20,
        f"fixed + {label} similarity after registration + deformed grid",
        color="white",
        fontsize=9,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
