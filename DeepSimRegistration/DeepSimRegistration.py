"""DeepSim Registration: learned deformable registration with the DeepSim semantic similarity.

Thin Slicer module: metadata, widget, a Logic that delegates to ``DeepSimRegistrationLib``
(Qt-free MRML glue) and the ``deepsim`` command, run in a child process so Slicer stays
responsive, and the self-test. ``torch`` never loads in Slicer's own process; it is installed
through the PyTorch extension (PyTorchUtils) when the user first clicks Register.

Oldest supported Slicer: 5.10 (its Python is newer than 3.10, the oldest Python the ``deepsim``
library supports; ``MINIMUM_PYTHON``, checked by the tests).
"""

import importlib.metadata
import itertools
import logging
import os
import sys
import time
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTransformNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

README_URL = "https://github.com/deepsim-registration/SlicerDeepSimRegistration#readme"
PAPER_URL = "https://arxiv.org/abs/2011.05735"
CONTRIBUTORS = ["DeepSim Registration maintainers (deepsim-registration)"]
TORCH_MINIMUM = "2.1"
MINIMUM_PYTHON = (3, 10)
MODEL_FILE_ITEM = "file..."


#
# DeepSimRegistration
#


class DeepSimRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DeepSim Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = _(
            "Deformable registration of two volumes with a learned network trained with the DeepSim "
            "semantic similarity. Choose fixed and moving volumes and click Register: you get a "
            "transform (fixed to moving), optionally the registered volume, a similarity heatmap and "
            "the Jacobian determinant of the deformation. "
            'See the <a href="{url}">documentation</a>.'
        ).format(url=README_URL)
        self.parent.acknowledgementText = _(
            "Based on the DeepSim method: Steffen Czolbe, Oswin Krause, Aasa Feragen, "
            '"Semantic similarity metrics for learned image registration", Medical Imaging with '
            "Deep Learning (MIDL 2021), PMLR 143. PyTorch is provided by the SlicerPyTorch extension."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the DeepSim sample pair (local files, SHA256-checked) to the Sample Data module."""
    try:
        import SampleData
    except ImportError:
        return
    from DeepSimRegistrationLib.sampledata import findSampleDataFolder, sampleDataSources

    folder = findSampleDataFolder(os.path.dirname(__file__))
    if folder is None:
        logging.debug("DeepSimRegistration: no sample data folder found")
        return
    for source in sampleDataSources(folder):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


#
# DeepSimRegistrationParameterNode
#


@parameterNodeWrapper
class DeepSimRegistrationParameterNode:
    """Everything the panel shows, so a saved scene restores it. ``model``/``device``/
    ``similarity`` hold the combo boxes' choices (their lists depend on the volumes and on
    torch, so the widget fills them and keeps these in step)."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    # typing.Union, not X | Y: the parameterNodeWrapper recognises typing.Union
    fixedMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]  # noqa: UP007
    movingMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]  # noqa: UP007
    outputTransform: vtkMRMLTransformNode
    outputVolume: vtkMRMLScalarVolumeNode
    heatmapVolume: vtkMRMLScalarVolumeNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: str = "auto"
    similarity: str = ""
    preset: Annotated[str, Choice(["recommended", "fast", "best"])] = "recommended"
    affine: bool = True
    ioSteps: Annotated[int, WithinRange(-1, 1000)] = -1  # -1: the preset's number
    modelSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    heatmap: Annotated[
        str, Choice(["deepsim_after", "deepsim_before", "ncc_after", "ncc_before"])
    ] = "deepsim_after"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# DeepSimRegistrationWidget
#


class DeepSimRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._outputs = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepSimRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DeepSimRegistrationLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._onTimer)
        self.ui.deviceComboBox.addItem(_("auto"), "auto")
        self.ui.similarityComboBox.addItem(_("model default"), "")
        for name in self.logic.similarities():
            self.ui.similarityComboBox.addItem(name, name)
        self.ui.similarityComboBox.enabled = self.ui.similarityComboBox.count > 1
        self.ui.modelComboBox.currentIndexChanged.connect(
            lambda index: self._setParameter("model", self.ui.modelComboBox.currentText)
        )
        self.ui.deviceComboBox.currentIndexChanged.connect(
            lambda index: self._setParameter("device", self.ui.deviceComboBox.currentData)
        )
        self.ui.similarityComboBox.currentIndexChanged.connect(
            lambda index: self._setParameter("similarity", self.ui.similarityComboBox.currentData)
        )
        self.ui.modelPathLineEdit.currentPathChanged.connect(self._updateRegisterButton)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.saveOutputsButton.connect("clicked(bool)", self.onSaveOutputsButton)
        self.ui.heatmapMetricComboBox.currentTextChanged.connect(self.onHeatmapChoiceChanged)
        self.ui.heatmapWhenComboBox.currentTextChanged.connect(self.onHeatmapChoiceChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.ui.saveOutputsButton.enabled = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameters
            )

    def onReload(self) -> None:
        """Reload the module's libraries too, not only this file."""
        self._stopJob()
        reloadLibraries()
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        # the scene goes away: a running registration is killed and its result never applied
        if self._job is not None:
            self._stopJob()
            self._log(_("The scene was closed: the registration was stopped."))
        self.setParameterNode(None)
        self._outputs = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.logic.selectDefaultInputs(self._parameterNode)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameters
            )
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameters)
            self._onParameters()

    # --- inputs ---------------------------------------------------------------------------

    def _onParameters(self, caller=None, event=None) -> None:
        self._fillModels()
        self._selectData(self.ui.deviceComboBox, self._parameterNode.device)
        self._selectData(self.ui.similarityComboBox, self._parameterNode.similarity)
        metric, when = self._parameterNode.heatmap.split("_")
        for combo, text in (
            (self.ui.heatmapMetricComboBox, "DeepSim" if metric == "deepsim" else "NCC"),
            (self.ui.heatmapWhenComboBox, when),
        ):  # both set before either reports a change, so neither overwrites the other
            blocked = combo.blockSignals(True)
            combo.setCurrentText(text)
            combo.blockSignals(blocked)
        self._updateRegisterButton()

    @staticmethod
    def _selectData(combo, value) -> None:
        index = combo.findData(value)
        if index >= 0 and combo.currentIndex != index:
            combo.currentIndex = index

    def _fillModels(self) -> None:
        """Shipped models for the fixed volume's dimension, the documented default first."""
        p = self._parameterNode
        names = self.logic.modelNames(p.fixedVolume)
        listed = [self.ui.modelComboBox.itemText(n) for n in range(self.ui.modelComboBox.count)]
        if listed != [*names, MODEL_FILE_ITEM]:
            blocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for name in [*names, MODEL_FILE_ITEM]:
                self.ui.modelComboBox.addItem(name)
            self.ui.modelComboBox.blockSignals(blocked)
        choice = p.model if p.model in (*names, MODEL_FILE_ITEM) else (names[0] if names else "")
        self.ui.modelComboBox.setCurrentText(choice or MODEL_FILE_ITEM)

    def _setParameter(self, name: str, value) -> None:
        """Keep a combo box's choice in the parameter node (only the one that changed, so a
        restored choice whose item is not listed yet, like a GPU before torch, is kept)."""
        p = self._parameterNode
        if p is not None and value is not None and getattr(p, name) != value:
            setattr(p, name, value)

    def _modelChoice(self):
        name = self.ui.modelComboBox.currentText
        if name == MODEL_FILE_ITEM:
            return self.ui.modelPathLineEdit.currentPath or None
        return name or None

    def _updateRegisterButton(self, caller=None, event=None) -> None:
        if self._job is not None or self._parameterNode is None:
            return
        reason = self.logic.whyNotReady(self._parameterNode, self._modelChoice())
        self.ui.registerButton.enabled = not reason
        self.ui.registerButton.toolTip = reason or _(
            "Register the moving volume to the fixed volume."
        )

    # --- running --------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def _setRunning(self, running: bool) -> None:
        self.ui.registerButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.cancelButton.setVisible(running)
        self.ui.progressBar.setVisible(running)
        if not running:
            self._job = None
            self._updateRegisterButton()

    def onRegisterButton(self) -> None:
        self.ui.logTextEdit.clear()
        with slicer.util.tryWithErrorDisplay(_("Registration could not start."), waitCursor=True):
            if not self.logic.ensureTorch(askConfirmation=True, log=self._log):
                self._log(_("PyTorch is needed to register; nothing was done."))
                return
            self._fillDevices()
            self._job = self.logic.startRegistration(
                self._parameterNode, self._modelChoice(), log=self._log
            )
        if self._job is None:
            return
        self.ui.progressBar.value = 0
        self._setRunning(True)
        self._timer.start()

    def _fillDevices(self) -> None:
        """The devices torch sees (asked once, in a child process), offered after torch is there."""
        current = self._parameterNode.device
        blocked = self.ui.deviceComboBox.blockSignals(True)
        self.ui.deviceComboBox.clear()
        for label, value in self.logic.availableDevices():
            self.ui.deviceComboBox.addItem(label, value)
        self.ui.deviceComboBox.blockSignals(blocked)
        self._selectData(self.ui.deviceComboBox, current)
        self._setParameter("device", self.ui.deviceComboBox.currentData)

    def _onTimer(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for kind, value in job.poll():
            if kind == "progress":
                fraction, message = value
                self.ui.progressBar.value = int(round(100 * fraction))
                self.ui.progressBar.format = "%p% " + message
                self._log(message)
            else:
                self._log(value)
        if job.state == "running":
            return
        self._timer.stop()
        try:
            with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
                outputs = self.logic.finishRegistration(
                    job, self._parameterNode, self._heatmapChoice()
                )
                if outputs is None:
                    self._log(_("Cancelled: the scene was left as it was."))
                    return
                self._outputs = outputs
                summary = self.logic.describe(outputs.summary)
                self.ui.summaryLabel.text = summary
                self._log(summary)
                self.ui.saveOutputsButton.enabled = True
                self.onOpacityChanged(self.ui.opacitySliderWidget.value)
        except Exception as err:  # shown by tryWithErrorDisplay; keep it in the log too
            self._log(str(err))
        finally:
            self._setRunning(False)

    def _stopJob(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._setRunning(False)

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()  # kills the process now; the timer reports it

    def onSaveOutputsButton(self) -> None:
        if self._outputs is None:
            return
        folder = qt.QFileDialog.getExistingDirectory(None, _("Save the registration outputs into"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("The outputs could not be saved."), waitCursor=True):
            written = self.logic.saveOutputs(self._outputs, folder)
            self._log(
                _("Saved {count} files into {folder}.").format(count=len(written), folder=folder)
            )

    # --- display --------------------------------------------------------------------------

    def _heatmapChoice(self) -> str:
        metric = "deepsim" if self.ui.heatmapMetricComboBox.currentText == "DeepSim" else "ncc"
        return metric + "_" + (self.ui.heatmapWhenComboBox.currentText or "after")

    def onHeatmapChoiceChanged(self, text=None) -> None:
        if self._parameterNode is not None:
            self._parameterNode.heatmap = self._heatmapChoice()
        if self._outputs is None:
            return
        if not self.logic.showHeatmap(self._outputs, self._heatmapChoice()):
            self._log(_("This heatmap is not available; register again to compute it."))

    def onOpacityChanged(self, value) -> None:
        if self._outputs is not None and self._outputs.heatmapVolume is not None:
            self.logic.setHeatmapOpacity(self._outputs, value)


def reloadLibraries() -> list:
    """Forget the module's libraries (``DeepSimRegistrationLib``, ``deepsim``) so that the next
    import reads them from disk again; returns the names dropped."""
    dropped = [
        name
        for name in list(sys.modules)
        if name.split(".")[0] in ("DeepSimRegistrationLib", "deepsim")
    ]
    for name in dropped:
        del sys.modules[name]
    return dropped


def versionTuple(version: str) -> tuple:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``: the leading numeric parts."""
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


#
# DeepSimRegistrationLogic
#


class DeepSimRegistrationLogic(ScriptedLoadableModuleLogic):
    """Registration without a GUI. The widget talks only to this class; the work is done by
    ``DeepSimRegistrationLib`` (MRML glue, the child process) and the ``deepsim`` command."""

    def __init__(self, python=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.python = python  # interpreter of the child process (None: PythonSlicer)
        self._devices = None

    def getParameterNode(self):
        return DeepSimRegistrationParameterNode(super().getParameterNode())

    @staticmethod
    def selectDefaultInputs(p) -> None:
        """Fixed and moving: the first two scalar volumes, when none is chosen yet."""
        volumes = [
            v
            for v in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            if not v.IsA("vtkMRMLLabelMapVolumeNode")
        ]
        if not p.fixedVolume and volumes:
            p.fixedVolume = volumes[0]
        if not p.movingVolume:
            others = [v for v in volumes if v is not p.fixedVolume]
            if others:
                p.movingVolume = others[0]

    # --- choices, from the torch-free catalogue -----------------------------------------------

    @staticmethod
    def modelNames(fixedVolume) -> list:
        """Shipped models for the volume's dimension (2 for one slice), the default first."""
        from DeepSimRegistrationLib.registration import listModels, volumeDimension

        return listModels(volumeDimension(fixedVolume))

    @staticmethod
    def similarities() -> tuple:
        """The similarity overrides the installed ``deepsim`` command accepts (may be none)."""
        from DeepSimRegistrationLib.registration import similarityChoices

        return similarityChoices()

    def whyNotReady(self, p, model) -> str:
        """Why Register cannot run now, in words for the panel ("" when it can)."""
        from DeepSimRegistrationLib.registration import checkNodes

        try:
            checkNodes(
                p.fixedVolume,
                p.movingVolume,
                self.outputNodes(p),
                p.fixedMask,
                p.movingMask,
            )
        except ValueError as err:
            return str(err)
        if not model:
            return _("Choose a model file under Advanced, or a shipped model.")
        return ""

    # --- torch ------------------------------------------------------------------------------

    @staticmethod
    def installedTorchVersion():
        """The installed torch version, read from its metadata (torch is not imported)."""
        try:
            return importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None

    def ensureTorch(self, askConfirmation: bool = True, log=None) -> bool:
        """PyTorch at ``TORCH_MINIMUM`` or newer, installed through the PyTorch extension when
        missing. Returns False when the user declined the installation."""
        version = self.installedTorchVersion()
        if version is not None:
            if versionTuple(version) < versionTuple(TORCH_MINIMUM):
                raise RuntimeError(
                    _(
                        "PyTorch {version} is installed, but DeepSim Registration needs {minimum} "
                        "or newer. Open the PyTorch Utils module, uninstall PyTorch, install it "
                        "again, and restart Slicer."
                    ).format(version=version, minimum=TORCH_MINIMUM)
                )
            return True
        try:
            import PyTorchUtils
        except ModuleNotFoundError as err:
            raise RuntimeError(
                _(
                    "DeepSim Registration needs the PyTorch extension. Install 'PyTorch' from the "
                    "Extensions Manager and restart Slicer."
                )
            ) from err
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _(
                "DeepSim Registration needs PyTorch, which is not installed yet. Install it now? "
                "The download is large (up to a few GB) and may take several minutes."
            )
        ):
            return False
        if log is not None:
            log(_("Installing PyTorch; this can take several minutes..."))
        with slicer.util.WaitCursor():
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=">=" + TORCH_MINIMUM
            )
        if torch is None:
            raise RuntimeError(
                _("PyTorch could not be installed; the Python console shows the reason.")
            )
        if log is not None:
            log(_("PyTorch {version} is installed.").format(version=torch.__version__))
        return True

    def availableDevices(self) -> list:
        """``(label, device)`` pairs torch sees, asked once in a child process (torch never
        loads in Slicer's own process): auto, CUDA GPUs by name, CPU."""
        if self._devices is None:
            from DeepSimRegistrationLib.devices import probeDevices

            self._devices = probeDevices(self.python)
        return self._devices

    # --- one registration -------------------------------------------------------------------

    @staticmethod
    def outputNodes(p):
        from DeepSimRegistrationLib.registration import OutputNodes

        return OutputNodes(
            transform=p.outputTransform,
            volume=p.outputVolume,
            heatmap=p.heatmapVolume,
            jacobian=p.jacobianVolume,
        )

    @staticmethod
    def settings(p, model):
        from DeepSimRegistrationLib.registration import RegistrationSettings

        return RegistrationSettings(
            model=model,
            device=p.device or "auto",
            preset=p.preset,
            similarity=p.similarity,
            affine=p.affine,
            ioSteps=p.ioSteps,
            modelSpacing=p.modelSpacing,
        )

    def startRegistration(self, p, model, log=None):
        """Start the child process for the panel's choices; returns the job to poll."""
        from DeepSimRegistrationLib.registration import startRegistration

        job = startRegistration(
            p.fixedVolume,
            p.movingVolume,
            self.settings(p, model),
            fixedMask=p.fixedMask,
            movingMask=p.movingMask,
            outputTransform=p.outputTransform,
            python=self.python,
            workDir=getattr(slicer.app, "temporaryPath", None),
        )
        if log is not None:
            log(_("Registration started in a separate process."))
        logging.info("DeepSim registration: %s", " ".join(job.process.command))
        return job

    def finishRegistration(self, job, p, heatmap: str = "deepsim_after"):
        """Put a finished job's result into the scene and into the parameter node; None when it
        was cancelled. Raises with the process's own message when it failed."""
        from deepsim.api import Cancelled
        from DeepSimRegistrationLib.registration import applyRegistration

        try:
            result = job.result()
        except Cancelled:
            return None
        outputs = applyRegistration(slicer.mrmlScene, result, self.outputNodes(p), heatmap)
        with slicer.util.NodeModify(p.parameterNode):
            p.outputTransform = outputs.outputTransform
            p.heatmapVolume = outputs.heatmapVolume
            p.jacobianVolume = outputs.jacobianVolume
        return outputs

    def process(self, fixedVolume, movingVolume, settings=None, outputs=None, **kwargs):
        """Register and wait (scripts, the self-test): the child process, then the scene."""
        from DeepSimRegistrationLib.registration import applyRegistration, computeRegistration

        start = time.time()
        result = computeRegistration(
            fixedVolume, movingVolume, settings, python=self.python, **kwargs
        )
        written = applyRegistration(fixedVolume.GetScene(), result, outputs)
        logging.info("DeepSim registration completed in %.1f s", time.time() - start)
        return written

    # --- after a run ------------------------------------------------------------------------

    @staticmethod
    def showHeatmap(outputs, name) -> bool:
        from DeepSimRegistrationLib.registration import showHeatmap

        return showHeatmap(outputs, name)

    @staticmethod
    def setHeatmapOpacity(outputs, opacity: float) -> None:
        from DeepSimRegistrationLib.nodes import setSliceLayers

        setSliceLayers(slicer.mrmlScene, foreground=outputs.heatmapVolume, opacity=opacity)

    @staticmethod
    def saveOutputs(outputs, folder):
        from DeepSimRegistrationLib.registration import saveOutputs

        return saveOutputs(outputs, folder)

    @staticmethod
    def describe(summary: dict) -> str:
        """The summary shown after a run: time, device, similarity before -> after, folding,
        Dice when label maps were given, and which field was kept (network, engine or affine)."""
        lines = [
            _("Done in {seconds:.1f} s on {device} with {model}.").format(
                seconds=summary.get("runtime_s", 0.0),
                device=summary.get("device", "?"),
                model=summary.get("model", "?"),
            ),
            _("Folding: {percent:.2f}% of voxels.").format(
                percent=summary.get("folding_percent", 0.0)
            ),
        ]
        for kind, label in (("deepsim", "DeepSim"), ("ncc", "NCC")):
            before = summary.get("similarity_" + kind + "_before")
            after = summary.get("similarity_" + kind + "_after")
            if before is not None and after is not None:
                lines.append(
                    _("{metric} similarity: {before:.3f} -> {after:.3f}.").format(
                        metric=label, before=before, after=after
                    )
                )
        if summary.get("dice_after") is not None:
            lines.append(
                _("Dice: {before:.3f} -> {after:.3f}.").format(
                    before=summary.get("dice_before", 0.0), after=summary["dice_after"]
                )
            )
        kept = summary.get("engine_kept")
        if kept is not None:
            lines.append(_("Kept the {field} field.").format(field=kept))
        return "\n".join(lines)


#
# DeepSimRegistrationTest
#


class DeepSimRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test on synthetic volumes; the registration step is skipped without torch."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GridTransform()
        self.setUp()
        self.test_Registration()

    def _volume(self, name, shift_mm=0.0):
        import numpy as np

        k, j, i = np.meshgrid(np.arange(24), np.arange(28), np.arange(32), indexing="ij")
        blob = 100 * np.exp(
            -((i * 1.5 - 24 - shift_mm) ** 2 + (j * 1.2 - 16) ** 2 + (k * 2.0 - 24) ** 2) / 120.0
        )
        node = slicer.util.addVolumeFromArray(blob.astype("float32"), name=name)
        node.SetSpacing(1.5, 1.2, 2.0)
        node.SetOrigin(-12.0, 8.0, 3.0)
        return node

    def test_GridTransform(self):
        """The output transform moves content the way deepsim's displacement says (no torch)."""
        import numpy as np

        from DeepSimRegistrationLib.nodes import (
            displacementToGridTransform,
            resampleThroughTransform,
            volumeToImage,
        )

        self.delayDisplay("Grid transform")
        fixed = self._volume("fixed")
        moving = self._volume("moving", shift_mm=6.0)
        grid = volumeToImage(fixed).grid
        # the moving blob sits 6 mm further along R: fixed point x reads moving point x + 6 mm R,
        # which is -6 mm along LPS x
        displacement = np.zeros((*grid.shape, 3), np.float32)
        displacement[..., 0] = -6.0
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTransformNode", "test transform")
        displacementToGridTransform(displacement, grid, node)
        warped = resampleThroughTransform(slicer.mrmlScene, volumeToImage(moving), node, grid)
        ref = slicer.util.arrayFromVolume(fixed)
        self.assertLess(float(np.abs(warped - ref)[4:-4, 4:-4, 4:-4].max()), 2.0)
        self.delayDisplay("Grid transform passed")

    def test_Registration(self):
        """End to end in a child process with the default model: one transform, inputs kept."""
        if DeepSimRegistrationLogic.installedTorchVersion() is None:
            self.delayDisplay("torch is not installed: registration step skipped")
            return
        import numpy as np

        from DeepSimRegistrationLib.registration import OutputNodes, RegistrationSettings

        self.delayDisplay("Registration")
        fixed = self._volume("fixed")
        moving = self._volume("moving", shift_mm=3.0)
        before = slicer.util.arrayFromVolume(moving).copy()
        outputs = DeepSimRegistrationLogic().process(
            fixed,
            moving,
            RegistrationSettings(device="cpu", affine=False, ioSteps=0),
            OutputNodes(createVolume=True),
        )
        self.assertEqual(
            outputs.heatmapVolume.GetImageData().GetDimensions(),
            fixed.GetImageData().GetDimensions(),
        )
        self.assertTrue(outputs.outputTransform.GetTransformFromParent() is not None)
        self.assertTrue(np.array_equal(before, slicer.util.arrayFromVolume(moving)))
        self.delayDisplay("Registration passed")
