"""MRML nodes <-> deepsim geometry: volumes, the output grid transform, output volumes.

Qt-free: every function takes its nodes and the scene explicitly, so it runs in the Slicer
application and in headless tests on ``slicer-core`` alike. ``torch`` is never imported here.

Frames: Slicer keeps RAS in memory, deepsim works in LPS; they meet only here, through
:meth:`deepsim.geometry.Grid.from_ijk_to_ras` / :meth:`~deepsim.geometry.Grid.ijk_to_ras` and
``F = diag(-1, -1, 1, 1)`` for homogeneous world matrices.

One registration gives one transform node: a resampling grid transform on the fixed grid whose
displacement is deepsim's complete mapping (affine included, ``displacement.nii.gz`` of the
``deepsim register`` command), so the moving volume goes under that node alone, as with
SlicerElastix and SlicerANTs.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from deepsim.geometry import Grid, Image

__all__ = [
    "LPS_RAS_4",
    "INFERNO_ID",
    "DIVERGING_BLUE_RED_ID",
    "vtkMatrix",
    "numpyMatrix",
    "ijkToRas",
    "volumeToImage",
    "displacementToGridTransform",
    "removeNode",
    "setScalarVolume",
    "ensureColorTable",
    "showHeatmapDisplay",
    "showJacobianDisplay",
    "setSliceLayers",
    "showTransformGrid",
    "resampleThroughTransform",
]

LPS_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Homogeneous LPS <-> RAS flip (its own inverse)."""

INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"
DIVERGING_BLUE_RED_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"


def vtkMatrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def numpyMatrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijkToRas(volumeNode) -> np.ndarray:
    """The node's own ``IJKToRAS`` 4x4 (parent transforms not applied)."""
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return numpyMatrix(m)


def _voxels(volumeNode) -> np.ndarray:
    image = volumeNode.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume {volumeNode.GetName()!r} has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"volume {volumeNode.GetName()!r} has {image.GetNumberOfScalarComponents()} components "
            "per voxel; a scalar (grey-value) volume is needed"
        )
    i, j, k = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.array(flat, dtype=np.float32).reshape(k, j, i)  # a copy: the input stays untouched


def volumeToImage(volumeNode, scene=None, excludeTransform=None) -> Image:
    """A scalar volume as a 3D deepsim :class:`~deepsim.geometry.Image` in **world** space (LPS)
    (a single slice is a ``(1, J, I)`` image; :mod:`.plane` makes it 2D).

    A linear parent transform is folded into the grid matrix (exact, no resampling); a
    non-linear one is applied by hardening a temporary copy, removed again before returning.
    The input node, its image data and its transform are never modified. A direct parent that is
    ``excludeTransform`` is skipped (its own parents still apply).
    """
    scene = scene or volumeNode.GetScene()
    array = _voxels(volumeNode)
    matrix = ijkToRas(volumeNode)
    parent = volumeNode.GetParentTransformNode()
    if parent is not None and excludeTransform is not None and parent is excludeTransform:
        parent = parent.GetParentTransformNode()
    if parent is None:
        return Image(array, Grid.from_ijk_to_ras(array.shape, matrix))
    if parent.IsTransformToWorldLinear():
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        return Image(array, Grid.from_ijk_to_ras(array.shape, numpyMatrix(to_world) @ matrix))
    tmp = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "DeepSim temporary")
    try:
        tmp.SetHideFromEditors(True)
        copy = vtk.vtkImageData()
        copy.DeepCopy(volumeNode.GetImageData())
        tmp.SetAndObserveImageData(copy)
        tmp.SetIJKToRASMatrix(vtkMatrix(matrix))
        tmp.SetAndObserveTransformNodeID(parent.GetID())
        slicer.vtkSlicerTransformLogic.hardenTransform(tmp)
        hardened = _voxels(tmp)
        return Image(hardened, Grid.from_ijk_to_ras(hardened.shape, ijkToRas(tmp)))
    finally:
        removeNode(scene, tmp)


def displacementToGridTransform(displacement: np.ndarray, grid: Grid, transformNode) -> None:
    """Store deepsim's complete mapping as the node's resampling (FromParent) grid transform.

    Args:
        displacement: ``(K, J, I, 3)`` LPS displacement in mm on ``grid``: the fixed point ``x``
            maps to the moving point ``x + d(x)`` (``displacement.nii.gz`` of ``deepsim register``).
        grid: the fixed volume's world grid (3D; a single slice has ``K = 1``).
        transformNode: any ``vtkMRMLTransformNode``; its FromParent becomes ``x -> x + d(x)`` in RAS.

    Recipe (slicer-conventions §3.2): ``vtkImageData`` dims (I, J, K) with the grid's origin and
    spacing, the direction in ``SetGridDirectionMatrix`` (vtkImageData's own is ignored). Cubic
    interpolation, because Slicer's transform reader restores cubic: the saved transform then
    reloads to the same mapping. At the fixed voxel centres both interpolations give the stored
    values exactly, so the mapping there is deepsim's.
    """
    if grid.spatial_dims != 3 or displacement.shape != (*grid.shape, 3):
        raise ValueError(
            "displacementToGridTransform(): displacement must be (*grid.shape, 3) = "
            f"({', '.join(map(str, grid.shape))}, 3), got {tuple(displacement.shape)}"
        )
    m = grid.ijk_to_ras()
    lin = m[:3, :3]
    ras = displacement.astype(np.float64) * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS vectors
    spacing = np.linalg.norm(lin, axis=0)
    direction = np.eye(4)
    direction[:3, :3] = lin / spacing
    k, j, i = grid.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    image.SetSpacing(*spacing)
    image.SetOrigin(*m[:3, 3])
    vectors = numpy_support.numpy_to_vtk(np.ascontiguousarray(ras.reshape(-1, 3)), deep=True)
    vectors.SetName("displacement")
    image.GetPointData().SetScalars(vectors)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(image)
    transform.SetGridDirectionMatrix(vtkMatrix(direction))
    transform.SetInterpolationModeToCubic()
    transformNode.SetAndObserveTransformFromParent(transform)


def removeNode(scene, node) -> None:
    """Remove ``node`` with its display and storage nodes (the scene does not cascade)."""
    if node is None or node.GetScene() is None:
        return
    extra = []
    if hasattr(node, "GetNumberOfDisplayNodes"):
        extra += [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    if hasattr(node, "GetNumberOfStorageNodes"):
        extra += [node.GetNthStorageNode(n) for n in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for other in extra:
        if other is not None and other.GetScene() is not None:
            scene.RemoveNode(other)


def setScalarVolume(
    scene, volumeNode, array: np.ndarray, matrix: np.ndarray, name: str, display: bool = True
):
    """Create (``volumeNode=None``) or overwrite a float scalar volume with ``array`` (K, J, I)
    and the given ``IJKToRAS``, without a parent transform. Returns the node."""
    if volumeNode is None:
        volumeNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    a = np.ascontiguousarray(array, dtype=np.float32)
    k, j, i = a.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(a.ravel(), deep=True, array_type=vtk.VTK_FLOAT)
    image.GetPointData().SetScalars(scalars)
    volumeNode.SetAndObserveImageData(image)
    volumeNode.SetIJKToRASMatrix(vtkMatrix(matrix))
    volumeNode.SetAndObserveTransformNodeID(None)
    if display:
        volumeNode.CreateDefaultDisplayNodes()
    volumeNode.Modified()
    return volumeNode


# Anchor colours (r, g, b in 0..1) of the two tables used, linearly interpolated to 256 entries;
# used only when Slicer's file-based tables are not in the scene (slicer-core has none).
_TABLES = {
    "Inferno": (
        INFERNO_ID,
        [
            (0.0015, 0.0005, 0.0139),
            (0.0878, 0.0442, 0.2240),
            (0.2582, 0.0386, 0.4065),
            (0.4163, 0.0904, 0.4329),
            (0.5783, 0.1480, 0.4044),
            (0.7357, 0.2159, 0.3302),
            (0.8650, 0.3168, 0.2261),
            (0.9545, 0.4684, 0.0998),
            (0.9876, 0.6453, 0.0399),
            (0.9644, 0.8432, 0.2726),
            (0.9884, 0.9984, 0.6449),
        ],
    ),
    "DivergingBlueRed": (
        DIVERGING_BLUE_RED_ID,
        [(0.230, 0.299, 0.754), (0.865, 0.865, 0.865), (0.706, 0.016, 0.150)],
    ),
}


def ensureColorTable(scene, name: str) -> str:
    """ID of Slicer's file-based colour table ``name`` (``Inferno`` or ``DivergingBlueRed``).

    When the scene lacks it (slicer-core, or an application without the colour files), an
    equivalent 256-entry table is added with the singleton tag ``File<name>.txt``, which gives it
    the canonical ID, so display nodes refer to the same ID either way.
    """
    if name not in _TABLES:
        raise ValueError(f"ensureColorTable(): name must be one of {sorted(_TABLES)}, got {name!r}")
    node_id, anchors = _TABLES[name]
    if scene.GetNodeByID(node_id) is not None:
        return node_id
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetName(name)
    table.SetSingletonTag(f"File{name}.txt")
    table.SetHideFromEditors(False)
    table.SetNumberOfColors(256)
    anchors = np.asarray(anchors)
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    rgb = np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=-1)
    for n, (r, g, b) in enumerate(rgb):
        table.SetColor(n, f"{n}", float(r), float(g), float(b), 1.0)
    scene.AddNode(table)
    return scene.GetNodeByID(node_id).GetID()


def showHeatmapDisplay(scene, volumeNode, lo: float = 0.0, hi: float = 1.0) -> None:
    """Inferno, fixed window ``lo..hi`` (similarities are 0..1; DeepSim can dip below 0)."""
    volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(ensureColorTable(scene, "Inferno"))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    display.SetInterpolate(1)


def showJacobianDisplay(scene, volumeNode) -> None:
    """DivergingBlueRed centred at 1 (no volume change), window 0..2."""
    volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(ensureColorTable(scene, "DivergingBlueRed"))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 2.0)


def setSliceLayers(scene, background=None, foreground=None, opacity: float | None = None) -> None:
    """Show ``background``/``foreground`` volumes in every slice view of ``scene`` (like
    ``slicer.util.setSliceViewerLayers``, but with an explicit scene). None leaves a layer as is."""
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if opacity is not None:
            composite.SetForegroundOpacity(float(opacity))


def showTransformGrid(transformNode, regionNode, spacingMm: float | None = None) -> None:
    """Show ``transformNode`` as a deformed grid in the slice views, over ``regionNode``."""
    transformNode.CreateDefaultDisplayNodes()
    display = transformNode.GetDisplayNode()
    display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
    display.SetAndObserveRegionNode(regionNode)
    if spacingMm:
        display.SetGridSpacingMm(float(spacingMm))
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    display.SetVisibility3D(False)


def resampleThroughTransform(scene, image: Image, transformNode, reference) -> np.ndarray:
    """Resample a world-space ``image`` (e.g. the moving volume) through ``transformNode`` onto
    the ``reference`` grid (a deepsim Grid, or a volume node), exactly as Slicer shows a volume
    placed under that node. Works on temporary nodes that are removed before returning;
    returns the ``(K, J, I)`` float32 array on the reference grid."""
    temps = []
    try:
        src = setScalarVolume(
            scene, None, image.array, image.grid.ijk_to_ras(), "DeepSim temp moving", display=False
        )
        temps.append(src)
        src.SetAndObserveTransformNodeID(
            transformNode.GetID() if transformNode is not None else None
        )
        if isinstance(reference, Grid):
            ref = setScalarVolume(
                scene,
                None,
                np.zeros(reference.shape, np.float32),
                reference.ijk_to_ras(),
                "DeepSim temp ref",
                False,
            )
            temps.append(ref)
        else:
            ref = reference
        out = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(src, ref)
        if out is None:
            raise RuntimeError("resampling through the output transform failed")
        if out.GetScene() is None:
            scene.AddNode(out)
        temps.append(out)
        return _voxels(out)
    finally:
        for node in temps:
            removeNode(scene, node)
