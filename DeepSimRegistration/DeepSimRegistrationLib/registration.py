"""One DeepSim registration of two volume nodes, in two steps that never overlap:

* :func:`startRegistration` -> :class:`RegistrationJob` -> :func:`computeRegistration` returns a
  :class:`ComputedRegistration`: the inputs are written to a work folder, ``deepsim register``
  runs in a child process (:mod:`.runner`), and its output folder is read back. No scene writes.
* :func:`applyRegistration` writes the result into the scene: one transform node (the complete
  mapping, affine included), and optionally the registered volume, a similarity heatmap and the
  Jacobian determinant, all on the fixed grid. Nodes are created or overwritten only here, and
  new nodes are removed again if a step fails.

Input nodes are never modified. Qt-free: the module's Logic, the Python console and headless
tests share this code. Nothing here imports torch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer

from deepsim.api import Cancelled, catalogue, default_model
from deepsim.geometry import Grid, Image, read_image, read_vector_image, write_image

from .nodes import (
    displacementToGridTransform,
    removeNode,
    setScalarVolume,
    setSliceLayers,
    showHeatmapDisplay,
    showJacobianDisplay,
    showTransformGrid,
    volumeToImage,
)
from .plane import PlaneFrame, isSingleSlice
from .runner import RegistrationProcess, moduleEnvironment, pythonExecutable

__all__ = [
    "DEVICES",
    "PRESETS",
    "HEATMAP_NAMES",
    "MODULE_DIR",
    "RegistrationSettings",
    "OutputNodes",
    "ComputedRegistration",
    "RegistrationOutputs",
    "RegistrationJob",
    "volumeDimension",
    "listModels",
    "defaultModelName",
    "checkNodes",
    "startRegistration",
    "computeRegistration",
    "readOutputFolder",
    "applyRegistration",
    "showHeatmap",
    "saveOutputs",
    "similarityChoices",
    "inSlicerTerms",
]

DEVICES = ("auto", "cuda", "cpu")
PRESETS = ("recommended", "fast", "best")  # menu order; the names of deepsim.presets.PRESETS
"""Instance-optimisation steps of each preset for a ``deepsim`` without ``--preset``."""
HEATMAP_NAMES = ("deepsim_after", "deepsim_before", "ncc_after", "ncc_before")
MODULE_DIR = Path(__file__).resolve().parents[1]
"""The module folder: it holds the ``deepsim`` package the child process imports."""


@dataclass
class RegistrationSettings:
    """What the panel chooses. ``model``: shipped name or file (None: the default model for the
    volumes' dimension); ``ioSteps``: -1 = the preset's; ``modelSpacing``: 0 = the model's;
    ``similarity``: "" = the model's own."""

    model: str | None = None
    device: str = "auto"
    preset: str = "recommended"
    similarity: str = ""
    affine: bool = True
    ioSteps: int = -1
    modelSpacing: float = 0.0


@dataclass
class OutputNodes:
    """Nodes to overwrite (None: create one when the matching ``create*`` flag is set).
    ``transform`` is always written (created when None)."""

    transform: object = None
    volume: object = None
    heatmap: object = None
    jacobian: object = None
    createVolume: bool = False
    createHeatmap: bool = True
    createJacobian: bool = True

    def volumes(self) -> dict:
        return {"registered": self.volume, "heatmap": self.heatmap, "Jacobian": self.jacobian}


@dataclass
class ComputedRegistration:
    """A finished computation, not yet in the scene. Arrays are ``(K, J, I)`` on ``fixedGrid``
    (the fixed volume's world grid); ``displacement`` is ``(K, J, I, 3)`` LPS mm, the complete
    mapping fixed -> moving; ``summary`` is the command's ``summary.json``."""

    fixedGrid: Grid
    displacement: np.ndarray
    warped: np.ndarray | None
    heatmaps: dict
    jacobian: np.ndarray
    summary: dict
    fixedNodeID: str
    movingNodeID: str
    log: list = field(default_factory=list)


@dataclass
class RegistrationOutputs:
    """What :func:`applyRegistration` wrote (nodes) and what the panel shows (summary)."""

    outputTransform: object
    outputVolume: object | None
    heatmapVolume: object | None
    jacobianVolume: object | None
    fixedGrid: Grid
    heatmaps: dict
    heatmapName: str | None
    summary: dict


def volumeDimension(volumeNode) -> int:
    """2 for a single-slice volume (registered with a 2D model), else 3."""
    image = volumeNode.GetImageData() if volumeNode is not None else None
    if image is None:
        return 3
    return 2 if image.GetDimensions()[2] == 1 else 3


def listModels(spatialDims: int) -> list[str]:
    """Names of the shipped models for ``spatialDims``, from the torch-free catalogue, the
    documented default first."""
    names = [n for n, m in catalogue().items() if m.spatial_dims == spatialDims]
    default = defaultModelName(spatialDims)
    return sorted(names, key=lambda n: (n != default, n))


def defaultModelName(spatialDims: int) -> str | None:
    try:
        return default_model(spatialDims).path.stem
    except ValueError:
        return None


def similarityChoices() -> tuple:
    """The similarities ``deepsim register --similarity`` accepts, in menu order (no torch)."""
    from deepsim.presets import SIMILARITIES

    return SIMILARITIES


_PANEL_NAMES = (
    ("--device cuda", "Device: GPU"),
    ("--device cpu", "Device: CPU"),
    ("--device", "Device"),
    ("--model-spacing", "Advanced > Model spacing"),
    ("--io-steps", "Advanced > Instance optimisation steps"),
    ("--similarity", "Advanced > Similarity"),
    ("--no-affine", "Affine pre-alignment off"),
    ("--fixed-mask", "Fixed mask"),
    ("--moving-mask", "Moving mask"),
    ("--preset", "Preset"),
    ("--model", "Model"),
)


def inSlicerTerms(message: str) -> str:
    """A ``deepsim`` command message with its option names replaced by the panel's."""
    for flag, name in _PANEL_NAMES:
        message = message.replace(flag, name)
    return message


def _ancestors(node) -> list:
    out, parent = [], node.GetParentTransformNode()
    while parent is not None and len(out) < 100:
        out.append(parent)
        parent = parent.GetParentTransformNode()
    return out


def checkNodes(fixedNode, movingNode, outputs: OutputNodes, fixedMask=None, movingMask=None):
    """Refuse, with one line naming the problem, inputs that cannot be registered and outputs
    that would overwrite an input. Returns None when all is well."""
    if fixedNode is None or movingNode is None:
        raise ValueError("choose both a fixed and a moving volume")
    if fixedNode.GetID() == movingNode.GetID():
        raise ValueError("fixed and moving volume must be different volumes")
    for what, node in (("fixed", fixedNode), ("moving", movingNode)):
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(
                f"the {what} volume must be a scalar volume, not {node.GetClassName()}"
            )
        if node.GetImageData() is None:
            raise ValueError(f"the {what} volume {node.GetName()!r} has no image data")
    if volumeDimension(fixedNode) != volumeDimension(movingNode):
        raise ValueError(
            "one volume is a single slice and the other is not; register 2D to 2D or 3D to 3D"
        )
    inputs = {"fixed volume": fixedNode, "moving volume": movingNode}
    inputs.update({"fixed mask": fixedMask, "moving mask": movingMask})
    inputIds = {n.GetID(): what for what, n in inputs.items() if n is not None}
    for what, node in outputs.volumes().items():
        if node is not None and node.GetID() in inputIds:
            raise ValueError(
                f"the {what} output is the {inputIds[node.GetID()]}; choose another node or "
                "'Create new volume' so the input is not overwritten"
            )
    if outputs.transform is not None:
        for what, node in inputs.items():
            if node is None:
                continue
            above = _ancestors(node)
            if node is movingNode and above and above[0] is outputs.transform:
                above = above[1:]  # the previous result, replaced by this one
            if any(a.GetID() == outputs.transform.GetID() for a in above):
                raise ValueError(
                    f"the {what} is under the output transform {outputs.transform.GetName()!r}; "
                    "choose 'Create new transform', or take the volume out of the transform first"
                )


def _maskImage(node, scene) -> Image:
    """A label volume or a segmentation as a world-space 0/1 image."""
    if node.IsA("vtkMRMLSegmentationNode"):
        labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "DeepSim temporary mask")
        try:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportVisibleSegmentsToLabelmapNode(node, labels):
                raise ValueError(f"segmentation {node.GetName()!r} could not be turned into a mask")
            image = volumeToImage(labels, scene)
        finally:
            removeNode(scene, labels)
    else:
        image = volumeToImage(node, scene)
    return Image((image.array > 0).astype(np.uint8), image.grid)


@dataclass
class RegistrationJob:
    """One registration in flight: the child process, its work folder, and the node IDs and
    fixed grid it was started for (``frame``: the plane of a single-slice pair). ``state`` is
    the process's; :meth:`result` reads the output folder."""

    process: RegistrationProcess
    workDir: Path
    outDir: Path
    fixedNodeID: str
    movingNodeID: str
    fixedGrid: Grid
    frame: PlaneFrame | None = None

    @property
    def state(self) -> str:
        return self.process.state

    def poll(self):
        return self.process.poll()

    def cancel(self) -> None:
        self.process.cancel()
        self.cleanup()

    def wait(self, timeout: float | None = None):
        return self.process.wait(timeout)

    def result(self) -> ComputedRegistration:
        """The computation's outputs; raises ``Cancelled`` or ``RuntimeError`` (with the child's
        own message) when it did not finish."""
        if self.state == "cancelled":
            raise Cancelled("registration cancelled")
        if self.state != "finished":
            raise RuntimeError(inSlicerTerms(self.process.errorMessage()))
        try:
            return readOutputFolder(
                self.outDir,
                self.fixedGrid,
                self.frame,
                self.fixedNodeID,
                self.movingNodeID,
                self.process.lines,
            )
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)


def startRegistration(
    fixedNode,
    movingNode,
    settings: RegistrationSettings | None = None,
    fixedMask=None,
    movingMask=None,
    outputTransform=None,
    python: str | None = None,
    workDir: str | Path | None = None,
) -> RegistrationJob:
    """Write the inputs (world space, parent transforms applied) and start ``deepsim register``
    in a child process. Returns at once; poll the job, or call :func:`computeRegistration`.

    A moving volume placed directly under ``outputTransform`` (by the previous run) is taken
    without it: this run replaces that transform."""
    settings = settings or RegistrationSettings()
    checkNodes(fixedNode, movingNode, OutputNodes(outputTransform), fixedMask, movingMask)
    if settings.device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {settings.device!r}")
    if settings.preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {settings.preset!r}")
    scene = fixedNode.GetScene()
    fixed = volumeToImage(fixedNode, scene)
    moving = volumeToImage(movingNode, scene, excludeTransform=outputTransform)
    masks = {"fixed": fixedMask, "moving": movingMask}
    frame = PlaneFrame(fixed) if isSingleSlice(fixed) else None
    work = Path(tempfile.mkdtemp(prefix="DeepSimRegistration-", dir=workDir))
    try:
        files = {"fixed": fixed, "moving": moving}
        for role, node in masks.items():
            if node is not None:
                files[f"{role}-mask"] = _maskImage(node, scene)
        paths = {}
        for role, image in files.items():
            if frame is not None:
                image = frame.to2d(image, role.replace("-", " "))
            paths[role] = work / f"{role}.nrrd"
            write_image(image, paths[role])
        out = work / "out"
        command = [python or pythonExecutable(), "-m", "deepsim", "register"]
        command += [paths["fixed"], paths["moving"], "--out", out, "--progress-lines"]
        command += ["--no-figure", "--device", settings.device]
        dims = 2 if frame is not None else 3
        model = settings.model or defaultModelName(dims)
        if model is not None:
            command += ["--model", model]
        if not settings.affine:
            command.append("--no-affine")
        command += ["--preset", settings.preset]
        ioSteps = int(settings.ioSteps)
        if ioSteps >= 0:
            command += ["--io-steps", ioSteps]
        if settings.modelSpacing:
            command += ["--model-spacing", float(settings.modelSpacing)]
        if settings.similarity:
            command += ["--similarity", settings.similarity]
        for role in masks:
            if f"{role}-mask" in paths:
                command += [f"--{role}-mask", paths[f"{role}-mask"]]
        process = RegistrationProcess(command, env=moduleEnvironment(MODULE_DIR), cwd=str(work))
        job = RegistrationJob(
            process, work, out, fixedNode.GetID(), movingNode.GetID(), fixed.grid, frame
        )
        process.start()
        return job
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def computeRegistration(fixedNode, movingNode, settings=None, progress=None, **kwargs):
    """:func:`startRegistration` and wait (scripts, tests, the self-test). ``progress``:
    ``fn(fraction, message)``, called as progress lines arrive."""
    job = startRegistration(fixedNode, movingNode, settings, **kwargs)
    try:
        while job.state == "running":
            for kind, value in job.poll():
                if kind == "progress" and progress is not None:
                    progress(*value)
            time.sleep(0.05)
        return job.result()
    finally:
        if job.state == "running":
            job.cancel()


def readOutputFolder(
    folder, fixedGrid: Grid, frame, fixedNodeID="", movingNodeID="", log=()
) -> ComputedRegistration:
    """Read the files of ``deepsim register`` (displacement, warped, heatmaps, Jacobian, summary)
    onto the fixed volume's world grid ``fixedGrid``."""
    folder = Path(folder)

    def scalar(name: str) -> np.ndarray:
        array = read_image(folder / name, name).array.astype(np.float32)
        return array[None] if frame is not None else array

    field_ = read_vector_image(folder / "displacement.nii.gz", "displacement").array
    displacement = frame.displacementTo3d(field_) if frame is not None else field_
    if displacement.shape != (*fixedGrid.shape, 3):
        raise RuntimeError(
            f"the displacement written by deepsim has shape {displacement.shape}; expected "
            f"{(*fixedGrid.shape, 3)} (the fixed volume's grid)"
        )
    heatmaps = {}
    for name in HEATMAP_NAMES:
        if (folder / f"similarity_{name}.nii.gz").is_file():
            heatmaps[name] = scalar(f"similarity_{name}.nii.gz")
    warped = scalar("warped.nii.gz") if (folder / "warped.nii.gz").is_file() else None
    return ComputedRegistration(
        fixedGrid=fixedGrid,
        displacement=displacement.astype(np.float32),
        warped=warped,
        heatmaps=heatmaps,
        jacobian=scalar("jacobian.nii.gz"),
        summary=json.loads((folder / "summary.json").read_text()),
        fixedNodeID=fixedNodeID,
        movingNodeID=movingNodeID,
        log=list(log),
    )


def applyRegistration(
    scene,
    result: ComputedRegistration,
    outputs: OutputNodes | None = None,
    heatmap: str = "deepsim_after",
    showResults: bool = True,
) -> RegistrationOutputs:
    """Write ``result`` into ``scene``. The moving volume is put under the transform when no
    registered volume is wanted (as SlicerElastix does). Raises ValueError when the inputs left
    the scene during the run; new nodes are removed again when a step fails."""
    outputs = outputs or OutputNodes()
    if heatmap not in HEATMAP_NAMES:
        raise ValueError(f"heatmap must be one of {', '.join(HEATMAP_NAMES)}; got {heatmap!r}")
    fixedNode = scene.GetNodeByID(result.fixedNodeID) if result.fixedNodeID else None
    movingNode = scene.GetNodeByID(result.movingNodeID) if result.movingNodeID else None
    if fixedNode is None or movingNode is None:
        raise ValueError("the fixed or moving volume was removed during the registration")
    checkNodes(fixedNode, movingNode, outputs)
    live = {  # a chosen output node removed during the run is made anew
        key: node if node is not None and node.GetScene() is scene else None
        for key, node in vars(outputs).items()
        if not key.startswith("create")
    }
    matrix = result.fixedGrid.ijk_to_ras()
    created = []

    def volume(node, array, name):
        isNew = node is None
        node = setScalarVolume(scene, node, array, matrix, name)
        if isNew:
            created.append(node)
        return node

    try:
        transform = live["transform"]
        if transform is None:
            transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "DeepSim transform")
            created.append(transform)
        displacementToGridTransform(result.displacement, result.fixedGrid, transform)
        transform.SetNodeReferenceID(
            slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole(), movingNode.GetID()
        )
        transform.SetNodeReferenceID(
            slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole(), fixedNode.GetID()
        )
        registered = live["volume"]
        if result.warped is not None and (registered is not None or outputs.createVolume):
            registered = volume(registered, result.warped, f"{movingNode.GetName()} registered")
            display, fixedDisplay = registered.GetDisplayNode(), fixedNode.GetDisplayNode()
            if display is not None and fixedDisplay is not None:
                display.SetAndObserveColorNodeID(fixedDisplay.GetColorNodeID())
        else:
            registered = None
        heatmapName = heatmap if heatmap in result.heatmaps else next(iter(result.heatmaps), None)
        heat = live["heatmap"]
        if heatmapName is not None and (heat is not None or outputs.createHeatmap):
            heat = volume(heat, result.heatmaps[heatmapName], "DeepSim similarity")
            heat.SetAttribute("DeepSim.heatmap", heatmapName)
            showHeatmapDisplay(scene, heat)
        else:
            heat = None
        jacobian = live["jacobian"]
        if jacobian is not None or outputs.createJacobian:
            jacobian = volume(jacobian, result.jacobian, "DeepSim Jacobian determinant")
            showJacobianDisplay(scene, jacobian)
        if registered is None:
            movingNode.SetAndObserveTransformNodeID(transform.GetID())
        if showResults:
            setSliceLayers(scene, background=fixedNode, foreground=heat or registered, opacity=0.5)
            spacing = float(max(result.fixedGrid.spacing)) * 4
            showTransformGrid(transform, fixedNode, spacingMm=spacing)
    except BaseException:
        for node in reversed(created):
            removeNode(scene, node)
        raise
    return RegistrationOutputs(
        outputTransform=transform,
        outputVolume=registered,
        heatmapVolume=heat,
        jacobianVolume=jacobian,
        fixedGrid=result.fixedGrid,
        heatmaps=result.heatmaps,
        heatmapName=heatmapName,
        summary=result.summary,
    )


def showHeatmap(outputs: RegistrationOutputs, name: str) -> bool:
    """Switch ``outputs.heatmapVolume`` to heatmap ``name`` (e.g. ``ncc_before``) without
    re-running. Returns False when that heatmap is not available."""
    if name not in HEATMAP_NAMES:
        raise ValueError(f"heatmap must be one of {', '.join(HEATMAP_NAMES)}; got {name!r}")
    node = outputs.heatmapVolume
    if node is None or node.GetScene() is None or name not in outputs.heatmaps:
        return False
    scene = node.GetScene()
    matrix = outputs.fixedGrid.ijk_to_ras()
    setScalarVolume(scene, node, outputs.heatmaps[name], matrix, node.GetName())
    node.SetAttribute("DeepSim.heatmap", name)
    showHeatmapDisplay(scene, node)
    outputs.heatmapName = name
    return True


def _writeNode(scene, node, path: Path, storageClass: str) -> None:
    """Write ``node`` to ``path`` with a temporary storage node, so the node's own storage
    (where the user saves the scene) is left as it was."""
    storage = scene.AddNewNodeByClass(storageClass)
    try:
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise OSError(f"could not write {path}")
    finally:
        scene.RemoveNode(storage)


def saveOutputs(outputs: RegistrationOutputs, folder: str | Path) -> list[Path]:
    """Save the transform (``transform.h5``), the output volumes (``.nrrd``) and
    ``summary.json`` into ``folder``. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = outputs.outputTransform.GetScene()
    if scene is None:
        raise ValueError("the output transform is no longer in the scene")
    written = [folder / "transform.h5"]
    _writeNode(scene, outputs.outputTransform, written[0], "vtkMRMLTransformStorageNode")
    volumes = {
        "registered": outputs.outputVolume,
        f"similarity_{outputs.heatmapName}": outputs.heatmapVolume,
        "jacobian": outputs.jacobianVolume,
    }
    for name, node in volumes.items():
        if node is not None and node.GetScene() is scene:
            written.append(folder / f"{name}.nrrd")
            _writeNode(scene, node, written[-1], "vtkMRMLVolumeArchetypeStorageNode")
    written.append(folder / "summary.json")
    written[-1].write_text(json.dumps(outputs.summary, indent=2) + "\n")
    return written
