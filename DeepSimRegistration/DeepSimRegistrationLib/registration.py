"""``registerVolumes``: one DeepSim registration of two volume nodes, outputs as MRML nodes.

Qt-free, so the module's Logic, the Python console and headless tests share it. ``torch`` and the
deepsim networks are imported only when a registration runs.

Guarantees:

* input volume nodes (image data, geometry, parent transforms, storage) are never modified;
* nodes are created or overwritten only after the computation succeeded; when cancelled
  (``deepsim.api.Cancelled``) or failed, the scene holds the same nodes as before;
* the warped volume is resampled through the very transform chain given to the user, so the
  output volume and the output transform always agree.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from deepsim.geometry import Grid

from .nodes import (
    make_transform_chain,
    remove_node,
    resample_through_chain,
    set_scalar_volume,
    set_slice_layers,
    show_heatmap_display,
    show_jacobian_display,
    show_transform_grid,
    transform_chain_bottom,
    volume_to_image,
)

__all__ = [
    "DEVICES",
    "QUALITY_PRESETS",
    "HEATMAP_NAMES",
    "RegistrationOutputs",
    "registerVolumes",
    "showHeatmap",
    "listModels",
    "gpuLikelyAvailable",
]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
QUALITY_PRESETS = {"recommended": -1, "fast": 0, "best": 100}
"""Instance-optimisation steps per quality preset (-1: the model's recommended number)."""
HEATMAP_NAMES = ("deepsim_after", "deepsim_before", "ncc_after", "ncc_before")

ProgressFn = Callable[[float, str], None]

_model_cache: dict = {}


@dataclass
class RegistrationOutputs:
    """What :func:`registerVolumes` made. ``heatmaps``: all heatmaps (name -> ``(K, J, I)`` on the
    fixed grid) so the display can switch between them without re-running."""

    outputTransform: object
    affineTransform: object
    outputVolume: object | None
    heatmapVolume: object | None
    jacobianVolume: object | None
    fixedGrid: Grid
    heatmaps: dict = field(default_factory=dict)
    heatmapName: str | None = None
    summary: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    result: object = None
    """The library's ``deepsim.register.RegistrationResult`` (model field, affine, displacement)."""


def listModels(spatialDims: int = 3) -> dict[str, Path]:
    """Shipped model name -> file for ``spatialDims``, from the torch-free catalogue."""
    from deepsim.api import catalogue

    return {n: m.path for n, m in catalogue().items() if m.spatial_dims == spatialDims}


def gpuLikelyAvailable() -> bool:
    """Whether offering 'GPU' makes sense; imports nothing heavy unless torch is already loaded."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or sys.platform == "win32"
        and bool(os.environ.get("CUDA_PATH"))
    )


def _load_model(model, device: str):
    from deepsim.api import resolve_model
    from deepsim.modelio import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    path = resolve_model(None if model in (None, "") else str(model), 3)
    key = (str(Path(path).resolve()), Path(path).stat().st_mtime if Path(path).exists() else 0)
    if key not in _model_cache:
        _model_cache.clear()
        _model_cache[key] = load_model(path, "cpu", spatial_dims=3)
    return _model_cache[key]


class _Warnings(logging.Handler):
    """Collects the library's warnings (e.g. the CUDA out-of-memory fallback) for the GUI."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _ancestors(node) -> list:
    out, parent = [], node.GetParentTransformNode()
    while parent is not None and len(out) < 100:
        out.append(parent)
        parent = parent.GetParentTransformNode()
    return out


def _check_not_under_output(fixedNode, movingNode, outputTransform) -> None:
    """Overwriting a transform an input sits under would change that input's world position."""
    if outputTransform is None:
        return
    ours = {outputTransform.GetID()}
    bottom = transform_chain_bottom(outputTransform)
    if bottom is not None:
        ours.add(bottom.GetID())
    for what, node in (("fixed", fixedNode), ("moving", movingNode)):
        if any(a.GetID() in ours for a in _ancestors(node)):
            raise ValueError(
                f"the {what} volume is under the output transform {outputTransform.GetName()!r}; "
                "choose 'Create new transform' as output, or take the volume out of the transform first"
            )


def registerVolumes(
    fixedNode,
    movingNode,
    model=None,
    device: str = "auto",
    ioSteps: int = -1,
    affine: bool = True,
    modelSpacing: float | None = None,
    outputTransform=None,
    outputVolume=None,
    heatmapVolume=None,
    jacobianVolume=None,
    createOutputVolume: bool = False,
    createHeatmapVolume: bool = True,
    createJacobianVolume: bool = True,
    heatmap: str = "deepsim_after",
    showResults: bool = True,
    progress: ProgressFn | None = None,
    shouldCancel: Callable[[], bool] | None = None,
    scene=None,
) -> RegistrationOutputs:
    """Register ``movingNode`` to ``fixedNode`` with a DeepSim model.

    Args:
        fixedNode, movingNode: scalar volume nodes (taken in world space, parent transforms
            included). Never modified.
        model: shipped model name, model file path, a loaded ``deepsim.modelio.LoadedModel``, or
            None for the default shipped 3D model.
        device: ``auto`` | ``cuda`` | ``cpu``. A CUDA out-of-memory error falls back to the CPU; the
            message is in ``outputs.messages``.
        ioSteps: instance-optimisation steps (0 = network only, -1 = the model's recommended
            number; see ``QUALITY_PRESETS``).
        affine: classical affine pre-alignment first.
        modelSpacing: model grid spacing in mm (None or 0: the model's own).
        outputTransform: transform node to overwrite, or None to create one. It receives the
            deformable grid; its child linear node (``outputs.affineTransform``) the affine. Place
            the moving volume under the *affine* node to apply the registration.
        outputVolume, heatmapVolume, jacobianVolume: nodes to overwrite; when None, created if the
            matching ``create*`` flag is set.
        heatmap: which heatmap fills ``heatmapVolume`` (one of ``HEATMAP_NAMES``).
        showResults: put fixed + heatmap in the slice views and show the grid.
        progress: ``fn(fraction, message)``; shouldCancel: ``fn() -> bool``, checked between stages.

    Raises:
        ValueError on bad input, ``deepsim.api.Cancelled`` when cancelled (scene unchanged).
    """
    if fixedNode is None or movingNode is None:
        raise ValueError("registerVolumes(): choose both a fixed and a moving volume")
    if fixedNode is movingNode or fixedNode.GetID() == movingNode.GetID():
        raise ValueError("registerVolumes(): fixed and moving volume must be different volumes")
    for what, node in (("fixed", fixedNode), ("moving", movingNode)):
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(
                f"registerVolumes(): the {what} volume must be a scalar volume, got {node.GetClassName()}"
            )
    if device not in DEVICES:
        raise ValueError(
            f"registerVolumes(): device must be one of {', '.join(DEVICES)}; got {device!r}"
        )
    if heatmap not in HEATMAP_NAMES:
        raise ValueError(
            f"registerVolumes(): heatmap must be one of {', '.join(HEATMAP_NAMES)}; got {heatmap!r}"
        )
    if int(ioSteps) < -1:
        raise ValueError(f"registerVolumes(): ioSteps must be >= -1, got {ioSteps}")
    scene = scene or fixedNode.GetScene()
    _check_not_under_output(fixedNode, movingNode, outputTransform)

    def report(fraction: float, message: str) -> None:
        log.info("%3.0f%% %s", 100 * fraction, message)
        if progress is not None:
            progress(fraction, message)

    report(0.0, "reading volumes")
    fixed = volume_to_image(fixedNode, scene)
    moving = volume_to_image(movingNode, scene)

    report(0.02, "loading the model")
    from deepsim.api import Cancelled, RegistrationOptions
    from deepsim.register import register

    loaded = _load_model(model, device)
    if shouldCancel is not None and shouldCancel():
        raise Cancelled("registration cancelled")
    options = RegistrationOptions(
        device=device,
        affine=bool(affine),
        io_steps=None if int(ioSteps) == -1 else int(ioSteps),
        model_spacing=float(modelSpacing) if modelSpacing else None,
        heatmaps=heatmapVolume is not None or createHeatmapVolume,
        warped=False,  # the warped volume is made through the Slicer transform chain below
    )
    catcher = _Warnings()
    deepsim_log = logging.getLogger("deepsim")
    deepsim_log.addHandler(catcher)
    try:
        result = register(
            fixed,
            moving,
            loaded,
            options,
            progress=lambda f, m: report(0.05 + 0.8 * f, m),
            should_cancel=shouldCancel,
        )
    finally:
        deepsim_log.removeHandler(catcher)
    messages = list(catcher.messages)
    if (
        device != "cpu"
        and result.summary.device == "cpu"
        and any("out of memory" in m for m in messages)
    ):
        messages.insert(
            0, "The GPU ran out of memory; the registration was computed on the CPU instead."
        )
    if shouldCancel is not None and shouldCancel():
        raise Cancelled("registration cancelled")

    # --- the computation succeeded: now (and only now) touch the scene ------------------------
    report(0.86, "creating the output transform")
    created = []
    try:
        gridNode, affineNode, made = make_transform_chain(scene, result, outputTransform)
        created += made
        for node in (gridNode, affineNode):
            node.SetNodeReferenceID(
                slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole(), movingNode.GetID()
            )
            node.SetNodeReferenceID(
                slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole(), fixedNode.GetID()
            )
        fixedMatrix = fixed.grid.ijk_to_ras()

        if outputVolume is not None or createOutputVolume:
            report(0.9, "resampling the moving volume through the output transform")
            warped = resample_through_chain(scene, moving, affineNode, fixed.grid)
            isNew = outputVolume is None
            outputVolume = set_scalar_volume(
                scene, outputVolume, warped, fixedMatrix, f"{movingNode.GetName()} registered"
            )
            if isNew:
                created.append(outputVolume)
            display = outputVolume.GetDisplayNode()
            fixedDisplay = fixedNode.GetDisplayNode()
            if display is not None and fixedDisplay is not None:
                display.SetAndObserveColorNodeID(fixedDisplay.GetColorNodeID())

        heatmaps = {name: img.array for name, img in result.heatmaps.items()}
        heatmapName = (
            heatmap
            if heatmap in heatmaps
            else next((n for n in HEATMAP_NAMES if n in heatmaps), None)
        )
        if heatmapName is not None and (heatmapVolume is not None or createHeatmapVolume):
            report(0.94, "heatmap volume")
            isNew = heatmapVolume is None
            heatmapVolume = set_scalar_volume(
                scene, heatmapVolume, heatmaps[heatmapName], fixedMatrix, "DeepSim similarity"
            )
            if isNew:
                created.append(heatmapVolume)
            heatmapVolume.SetAttribute("DeepSim.heatmap", heatmapName)
            show_heatmap_display(scene, heatmapVolume)
        else:
            heatmapVolume = None

        if jacobianVolume is not None or createJacobianVolume:
            report(0.97, "Jacobian volume")
            isNew = jacobianVolume is None
            jacobianVolume = set_scalar_volume(
                scene,
                jacobianVolume,
                result.jacobian.array,
                fixedMatrix,
                "DeepSim Jacobian determinant",
            )
            if isNew:
                created.append(jacobianVolume)
            show_jacobian_display(scene, jacobianVolume)

        if showResults:
            set_slice_layers(
                scene, background=fixedNode, foreground=heatmapVolume or outputVolume, opacity=0.5
            )
            show_transform_grid(gridNode, fixedNode, spacingMm=float(max(fixed.grid.spacing)) * 4)
    except BaseException:
        for node in reversed(created):
            remove_node(scene, node)
        raise

    summary = result.summary.to_dict()
    summary["messages"] = messages
    report(1.0, "done")
    return RegistrationOutputs(
        outputTransform=gridNode,
        affineTransform=affineNode,
        outputVolume=outputVolume,
        heatmapVolume=heatmapVolume,
        jacobianVolume=jacobianVolume,
        fixedGrid=fixed.grid,
        heatmaps=heatmaps,
        heatmapName=heatmapName,
        summary=summary,
        messages=messages,
        result=result,
    )


def showHeatmap(outputs: RegistrationOutputs, name: str) -> bool:
    """Switch ``outputs.heatmapVolume`` to heatmap ``name`` (e.g. ``ncc_before``) without re-running.
    Returns False when that heatmap is not available (model without feature extractor)."""
    if name not in HEATMAP_NAMES:
        raise ValueError(
            f"showHeatmap(): name must be one of {', '.join(HEATMAP_NAMES)}; got {name!r}"
        )
    node = outputs.heatmapVolume
    if node is None or node.GetScene() is None or name not in outputs.heatmaps:
        return False
    scene = node.GetScene()
    set_scalar_volume(
        scene, node, outputs.heatmaps[name], outputs.fixedGrid.ijk_to_ras(), node.GetName()
    )
    node.SetAttribute("DeepSim.heatmap", name)
    show_heatmap_display(scene, node)
    outputs.heatmapName = name
    return True
