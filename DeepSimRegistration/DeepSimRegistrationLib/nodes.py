"""MRML nodes <-> deepsim geometry: volumes, the grid + affine transform chain, output volumes.

Qt-free: every function takes its nodes and the scene explicitly, so it runs in the Slicer
application and in headless tests on ``slicer-core`` alike. ``torch`` is never imported here.

Frames: Slicer keeps RAS in memory, deepsim works in LPS; they meet only here, through
:meth:`deepsim.geometry.Grid.from_ijk_to_ras` / :meth:`~deepsim.geometry.Grid.ijk_to_ras` and
``F = diag(-1, -1, 1, 1)`` for homogeneous world matrices.

The transform chain made by :func:`make_transform_chain` (verified numerically in
``Testing/Python/test_slicer_transforms.py``)::

    output transform node (grid, FromParent: x -> x + U(x))      <- top of the chain
      └─ affine node (linear, FromParent: y -> A y)                <- child of the grid node
           └─ moving volume (or the temporary copy the warped volume is made from)

Slicer composes a node's transform from world as ``FromWorld = own FromParent ∘ parent's
FromWorld``: the parent's mapping is applied *first*. For a volume under the affine node a fixed
world point ``x`` therefore goes through the grid first, then the affine, ``x -> A(x + U(x))``,
which is exactly deepsim's complete mapping (``deepsim.register.full_displacement``). Putting the
affine on top instead would give ``A x + U(A x)``, a different (wrong) mapping.
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
    "vtk_matrix",
    "numpy_matrix",
    "ijk_to_ras",
    "volume_to_image",
    "model_field_to_grid_transform",
    "affine_to_linear_transform",
    "make_transform_chain",
    "transform_chain_bottom",
    "remove_node",
    "set_scalar_volume",
    "ensure_color_table",
    "show_heatmap_display",
    "show_jacobian_display",
    "set_slice_layers",
    "show_transform_grid",
    "resample_through_chain",
]

LPS_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Homogeneous LPS <-> RAS flip (its own inverse)."""

INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"
DIVERGING_BLUE_RED_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"

AFFINE_REFERENCE_ROLE = "deepsimAffine"
"""Node reference from the output (grid) transform to its child affine node."""


def vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def numpy_matrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras(volumeNode) -> np.ndarray:
    """The node's own ``IJKToRAS`` 4x4 (parent transforms not applied)."""
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return numpy_matrix(m)


def _array(volumeNode) -> np.ndarray:
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


def volume_to_image(volumeNode, scene=None) -> Image:
    """A 3D scalar volume as a deepsim :class:`~deepsim.geometry.Image` in **world** space (LPS).

    A linear parent transform is folded into the grid matrix (exact, no resampling); a
    non-linear one is applied by hardening a temporary copy, removed again before returning.
    The input node, its image data and its transform are never modified.
    """
    scene = scene or volumeNode.GetScene()
    array = _array(volumeNode)
    if array.shape[0] < 2:
        raise ValueError(
            f"volume {volumeNode.GetName()!r} is a single slice; the Slicer module registers 3D "
            "volumes (use the deepsim command line for 2D images)"
        )
    matrix = ijk_to_ras(volumeNode)
    parent = volumeNode.GetParentTransformNode()
    if parent is None:
        return Image(array, Grid.from_ijk_to_ras(array.shape, matrix))
    if parent.IsTransformToWorldLinear():
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        return Image(array, Grid.from_ijk_to_ras(array.shape, numpy_matrix(to_world) @ matrix))
    tmp = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "DeepSim temporary")
    try:
        tmp.SetHideFromEditors(True)
        copy = vtk.vtkImageData()
        copy.DeepCopy(volumeNode.GetImageData())
        tmp.SetAndObserveImageData(copy)
        tmp.SetIJKToRASMatrix(vtk_matrix(matrix))
        tmp.SetAndObserveTransformNodeID(parent.GetID())
        slicer.vtkSlicerTransformLogic.hardenTransform(tmp)
        hardened = _array(tmp)
        return Image(hardened, Grid.from_ijk_to_ras(hardened.shape, ijk_to_ras(tmp)))
    finally:
        remove_node(scene, tmp)


def model_field_to_grid_transform(model_disp: np.ndarray, model_grid: Grid, transformNode) -> None:
    """Store the deformable field as a resampling grid transform on the model grid.

    Args:
        model_disp: ``(3, K, J, I)`` displacement in model voxels, channel i along tensor axis i
            (deepsim's ``RegistrationResult.model_disp``).
        model_grid: the grid the field lives on (lies in the fixed image's world space).
        transformNode: a ``vtkMRMLTransformNode`` (or grid transform node); its FromParent
            becomes ``x -> x + U(x)`` with ``U`` in RAS mm.

    Recipe (slicer-conventions §3.2): RAS vectors via the grid's ``IJKToRAS`` linear part with the
    channels reversed to (i, j, k); ``vtkImageData`` dims (I, J, K) with the grid's origin and
    spacing; the direction goes into ``SetGridDirectionMatrix`` (vtkImageData's own is ignored).
    """
    if model_grid.spatial_dims != 3 or model_disp.shape != (3, *model_grid.shape):
        raise ValueError(
            "model_field_to_grid_transform(): model_disp must be (3, *model_grid.shape) = "
            f"(3, {', '.join(map(str, model_grid.shape))}), got {tuple(model_disp.shape)}"
        )
    m = model_grid.ijk_to_ras()
    lin = m[:3, :3]
    d_ijk = np.stack([model_disp[2], model_disp[1], model_disp[0]], axis=-1)  # (K, J, I, 3)
    d_ras = d_ijk.astype(np.float64) @ lin.T
    spacing = np.linalg.norm(lin, axis=0)
    direction = np.eye(4)
    direction[:3, :3] = lin / spacing
    k, j, i = model_grid.shape
    grid = vtk.vtkImageData()
    grid.SetDimensions(i, j, k)
    grid.SetSpacing(*spacing)
    grid.SetOrigin(*m[:3, 3])
    vectors = numpy_support.numpy_to_vtk(np.ascontiguousarray(d_ras.reshape(-1, 3)), deep=True)
    vectors.SetName("displacement")
    grid.GetPointData().SetScalars(vectors)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(vtk_matrix(direction))
    transform.SetInterpolationModeToLinear()
    transformNode.SetAndObserveTransformFromParent(transform)


def affine_to_linear_transform(affine_lps: np.ndarray, transformNode) -> None:
    """Set a linear node's FromParent to deepsim's affine (fixed point -> moving point, LPS),
    converted to RAS: ``M_ras = F A F`` with ``F = diag(-1, -1, 1, 1)``."""
    a = np.asarray(affine_lps, np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine_to_linear_transform(): affine must be 4x4, got {a.shape}")
    transformNode.SetMatrixTransformFromParent(vtk_matrix(LPS_RAS_4 @ a @ LPS_RAS_4))


def transform_chain_bottom(outputTransform):
    """The affine node under ``outputTransform`` (where the moving volume goes), or None."""
    if outputTransform is None:
        return None
    return outputTransform.GetNodeReference(AFFINE_REFERENCE_ROLE)


def make_transform_chain(scene, result, outputTransform=None, name: str = "DeepSim transform"):
    """Create or update the grid node (top) and its child affine node from a deepsim result.

    Returns ``(gridNode, affineNode, created)``: ``created`` lists the nodes this call added, so
    a caller can remove them when a later step fails. See the module docstring for why the
    affine node is the grid node's child. An identity affine is still stored as a node, so the
    moving volume always goes under the same node (the chain's bottom).
    """
    created = []
    if outputTransform is None:
        outputTransform = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
        created.append(outputTransform)
    affineNode = transform_chain_bottom(outputTransform)
    if affineNode is None or affineNode.GetScene() is not scene:
        affineNode = scene.AddNewNodeByClass(
            "vtkMRMLLinearTransformNode", f"{outputTransform.GetName()} affine (place moving here)"
        )
        created.append(affineNode)
        outputTransform.SetNodeReferenceID(AFFINE_REFERENCE_ROLE, affineNode.GetID())
    model_field_to_grid_transform(result.model_disp, result.model_grid, outputTransform)
    affine_to_linear_transform(result.affine, affineNode)
    affineNode.SetAndObserveTransformNodeID(outputTransform.GetID())
    return outputTransform, affineNode, created


def remove_node(scene, node) -> None:
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


def set_scalar_volume(
    scene, volumeNode, array: np.ndarray, ijkToRas: np.ndarray, name: str, display: bool = True
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
    volumeNode.SetIJKToRASMatrix(vtk_matrix(ijkToRas))
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


def ensure_color_table(scene, name: str) -> str:
    """ID of Slicer's file-based colour table ``name`` (``Inferno`` or ``DivergingBlueRed``).

    When the scene lacks it (slicer-core, or an application without the colour files), an
    equivalent 256-entry table is added with the singleton tag ``File<name>.txt``, which gives it
    the canonical ID, so display nodes refer to the same ID either way.
    """
    if name not in _TABLES:
        raise ValueError(
            f"ensure_color_table(): name must be one of {sorted(_TABLES)}, got {name!r}"
        )
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


def show_heatmap_display(scene, volumeNode, lo: float = 0.0, hi: float = 1.0) -> None:
    """Inferno, fixed window ``lo..hi`` (similarities are 0..1; DeepSim can dip below 0)."""
    volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(ensure_color_table(scene, "Inferno"))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)
    display.SetInterpolate(1)


def show_jacobian_display(scene, volumeNode) -> None:
    """DivergingBlueRed centred at 1 (no volume change), window 0..2."""
    volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(ensure_color_table(scene, "DivergingBlueRed"))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 2.0)


def set_slice_layers(scene, background=None, foreground=None, opacity: float | None = None) -> None:
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


def show_transform_grid(transformNode, regionNode, spacingMm: float | None = None) -> None:
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


def resample_through_chain(scene, image: Image, chainBottom, reference) -> np.ndarray:
    """Resample a world-space ``image`` (e.g. the moving volume) through the transform chain onto
    the ``reference`` grid (a deepsim Grid, or a volume node), exactly as Slicer shows a volume
    placed under ``chainBottom``. Works on temporary nodes that are removed before returning;
    returns the ``(K, J, I)`` float32 array on the reference grid."""
    temps = []
    try:
        src = set_scalar_volume(
            scene, None, image.array, image.grid.ijk_to_ras(), "DeepSim temp moving", display=False
        )
        temps.append(src)
        src.SetAndObserveTransformNodeID(chainBottom.GetID() if chainBottom is not None else None)
        if isinstance(reference, Grid):
            ref = set_scalar_volume(
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
        return _array(out)
    finally:
        for node in temps:
            remove_node(scene, node)
