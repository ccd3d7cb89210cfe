"""DeepSim Registration: learned deformable registration with the DeepSim semantic similarity.

Thin Slicer module: metadata, widget, a Logic that delegates to ``DeepSimRegistrationLib``
(Qt-free MRML glue) and ``deepsim`` (the library), and the self-test. ``torch`` is imported only
when the user clicks Register, and installed through the PyTorch extension (PyTorchUtils).
"""

import logging
import os
import time
import traceback
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTransformNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

README_URL = "https://github.com/deepsim-registration/SlicerDeepSimRegistration#readme"
TORCH_REQUIREMENT = ">=2.1"
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
        self.parent.contributors = ["DeepSim Registration developers"]
        self.parent.helpText = _(
            "Deformable registration of two volumes with a learned network trained with the DeepSim "
            "semantic similarity. Choose fixed and moving volumes and click Register: you get a "
            "transform (fixed to moving), optionally the registered volume, a similarity heatmap and "
            "the Jacobian determinant of the deformation. "
            f'See the <a href="{README_URL}">documentation</a>.'
        )
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
    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    outputTransform: vtkMRMLTransformNode
    outputVolume: vtkMRMLScalarVolumeNode
    heatmapVolume: vtkMRMLScalarVolumeNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    affine: bool = True
    ioSteps: Annotated[int, WithinRange(-1, 1000)] = -1  # -1: the model's recommended number
    modelSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0


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
        self._running = False
        self._cancelRequested = False
        self._outputs = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepSimRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DeepSimRegistrationLogic()

        self._populateModels()
        self._populateDevices()
        self.ui.qualityComboBox.currentTextChanged.connect(self.onQualityChanged)
        self.ui.modelComboBox.currentTextChanged.connect(self._updateRegisterButton)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self._updateRegisterButton)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.heatmapMetricComboBox.currentTextChanged.connect(self.onHeatmapChoiceChanged)
        self.ui.heatmapWhenComboBox.currentTextChanged.connect(self.onHeatmapChoiceChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateRegisterButton
            )

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._outputs = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.fixedVolume = first
        if not self._parameterNode.movingVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            others = [v for v in volumes if v is not self._parameterNode.fixedVolume]
            if others:
                self._parameterNode.movingVolume = others[0]

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateRegisterButton
            )
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateRegisterButton
            )
            self._updateRegisterButton()

    # --- inputs ---------------------------------------------------------------------------

    def _populateModels(self) -> None:
        from DeepSimRegistrationLib.registration import listModels

        self.ui.modelComboBox.clear()
        for name in listModels(3):
            self.ui.modelComboBox.addItem(name)
        self.ui.modelComboBox.addItem(MODEL_FILE_ITEM)

    def _populateDevices(self) -> None:
        from DeepSimRegistrationLib.registration import gpuLikelyAvailable

        current = self.ui.deviceComboBox.currentText
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItem("auto")
        if gpuLikelyAvailable():
            self.ui.deviceComboBox.addItem("GPU")
        self.ui.deviceComboBox.addItem("CPU")
        if current:
            self.ui.deviceComboBox.setCurrentText(current)

    def _selectedModel(self):
        name = self.ui.modelComboBox.currentText
        if name == MODEL_FILE_ITEM:
            return self.ui.modelPathLineEdit.currentPath or None
        return name or None

    def _selectedDevice(self) -> str:
        return {"auto": "auto", "GPU": "cuda", "CPU": "cpu"}.get(
            self.ui.deviceComboBox.currentText, "auto"
        )

    def onQualityChanged(self, text) -> None:
        from DeepSimRegistrationLib.registration import QUALITY_PRESETS

        if self._parameterNode and text in QUALITY_PRESETS:
            self._parameterNode.ioSteps = QUALITY_PRESETS[text]

    def _updateRegisterButton(self, caller=None, event=None) -> None:
        if self._running:
            return
        p = self._parameterNode
        reason = ""
        if not p or not p.fixedVolume or not p.movingVolume:
            reason = _("Select fixed and moving volumes.")
        elif p.fixedVolume == p.movingVolume:
            reason = _("Fixed and moving volume must not be the same.")
        elif (
            self.ui.modelComboBox.currentText == MODEL_FILE_ITEM
            and not self.ui.modelPathLineEdit.currentPath
        ):
            reason = _("Choose a model file under Advanced, or a shipped model.")
        elif self.ui.modelComboBox.count <= 1 and not self.ui.modelPathLineEdit.currentPath:
            reason = _("No model is installed: choose a model file under Advanced.")
        self.ui.registerButton.enabled = not reason
        self.ui.registerButton.toolTip = reason or _(
            "Register the moving volume to the fixed volume."
        )

    # --- running --------------------------------------------------------------------------

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self.ui.registerButton.enabled = not running
        self.ui.cancelButton.enabled = running
        self.ui.cancelButton.setVisible(running)
        self.ui.progressBar.setVisible(running)
        self.ui.cancelButton.text = _("Cancel")
        if not running:
            self._updateRegisterButton()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.format = f"%p% {message}"
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.cancelButton.enabled = False
        self.ui.cancelButton.text = _("Cancelling...")

    def onRegisterButton(self) -> None:
        p = self._parameterNode
        try:
            if not self.logic.ensureTorch(askConfirmation=True):
                self.ui.statusLabel.text = _("PyTorch is needed to register; nothing was done.")
                return
        except Exception as err:
            slicer.util.errorDisplay(str(err), detailedText=traceback.format_exc())
            return
        self._populateDevices()  # torch is loaded now: offer GPU only if CUDA really works
        self._cancelRequested = False
        self._setRunning(True)
        try:
            outputs = self.logic.process(
                p.fixedVolume,
                p.movingVolume,
                model=self._selectedModel(),
                device=self._selectedDevice(),
                ioSteps=p.ioSteps,
                affine=p.affine,
                modelSpacing=p.modelSpacing or None,
                outputTransform=p.outputTransform,
                outputVolume=p.outputVolume,
                heatmapVolume=p.heatmapVolume,
                jacobianVolume=p.jacobianVolume,
                heatmap=self._heatmapChoice(),
                progress=self._onProgress,
                shouldCancel=lambda: self._cancelRequested,
            )
        except Exception as err:
            if type(err).__name__ == "Cancelled":
                self.ui.statusLabel.text = _("Cancelled: the scene was left as it was.")
            else:
                self.ui.statusLabel.text = _("Registration failed: {error}").format(error=err)
                slicer.util.errorDisplay(
                    _("Registration failed: {error}").format(error=err),
                    detailedText=traceback.format_exc(),
                )
            return
        finally:
            self._setRunning(False)
        self._outputs = outputs
        p.outputTransform = outputs.outputTransform
        p.heatmapVolume = outputs.heatmapVolume
        p.jacobianVolume = outputs.jacobianVolume
        self.ui.statusLabel.text = self.logic.describe(outputs)
        self.onOpacityChanged(self.ui.opacitySliderWidget.value)

    # --- display --------------------------------------------------------------------------

    def _heatmapChoice(self) -> str:
        metric = "deepsim" if self.ui.heatmapMetricComboBox.currentText == "DeepSim" else "ncc"
        return f"{metric}_{self.ui.heatmapWhenComboBox.currentText or 'after'}"

    def onHeatmapChoiceChanged(self, text=None) -> None:
        from DeepSimRegistrationLib.registration import showHeatmap

        if self._outputs is None:
            return
        if not showHeatmap(self._outputs, self._heatmapChoice()):
            self.ui.statusLabel.text = _(
                "This heatmap is not available; register again to compute it."
            )

    def onOpacityChanged(self, value) -> None:
        if self._outputs is not None and self._outputs.heatmapVolume is not None:
            from DeepSimRegistrationLib.nodes import set_slice_layers

            set_slice_layers(
                slicer.mrmlScene, foreground=self._outputs.heatmapVolume, opacity=value
            )


#
# DeepSimRegistrationLogic
#


class DeepSimRegistrationLogic(ScriptedLoadableModuleLogic):
    """Registration without a GUI; everything is delegated to ``DeepSimRegistrationLib``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return DeepSimRegistrationParameterNode(super().getParameterNode())

    @staticmethod
    def ensureTorch(askConfirmation: bool = True) -> bool:
        """Make ``import torch`` work, through the PyTorch extension (never pip directly).
        Returns False when the user declined the installation."""
        try:
            import torch  # noqa: F401

            return True
        except ImportError as err:
            if "_ARRAY_API" in str(err) or "numpy" in str(err).lower():
                raise RuntimeError(
                    "PyTorch is installed but was built against another NumPy version. "
                    "Reinstall PyTorch from the PyTorch Utils module, then restart Slicer."
                ) from err
        try:
            import PyTorchUtils
        except ModuleNotFoundError as err:
            raise RuntimeError(
                "DeepSim Registration needs the PyTorch extension. Install 'PyTorch' from the "
                "Extensions Manager and restart Slicer."
            ) from err
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _(
                    "DeepSim Registration needs PyTorch, which is not installed yet. Install it now? "
                    "The download is large (up to a few GB) and may take several minutes."
                )
            ):
                return False
            torch = torchLogic.installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
            )
            if torch is None:
                raise RuntimeError(
                    "PyTorch could not be installed; see the Python console for details."
                )
        return True

    def process(self, fixedVolume, movingVolume, **kwargs):
        """Register; see ``DeepSimRegistrationLib.registerVolumes`` for the arguments."""
        from DeepSimRegistrationLib.registration import registerVolumes

        start = time.time()
        logging.info("DeepSim registration started")
        outputs = registerVolumes(fixedVolume, movingVolume, **kwargs)
        logging.info(f"DeepSim registration completed in {time.time() - start:.1f} s")
        return outputs

    @staticmethod
    def describe(outputs) -> str:
        s = outputs.summary
        parts = [
            _("Done in {t:.1f} s on {device}.").format(
                t=s.get("runtime_s", 0.0), device=s.get("device", "?")
            ),
            _("Folding: {f:.2f}% of voxels.").format(f=s.get("folding_percent", 0.0)),
        ]
        for kind in ("deepsim", "ncc"):
            before, after = s.get(f"similarity_{kind}_before"), s.get(f"similarity_{kind}_after")
            if before is not None and after is not None:
                parts.append(f"{kind.upper()} {before:.3f} → {after:.3f}.")
        parts.append(
            _("To apply it, place the moving volume under '{name}'.").format(
                name=outputs.affineTransform.GetName()
            )
        )
        return " ".join(list(outputs.messages) + parts)


#
# DeepSimRegistrationTest
#


class DeepSimRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test on synthetic volumes; the model step is skipped when torch is not installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TransformChain()
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

    def test_TransformChain(self):
        """The grid + affine chain moves content the way deepsim says (no torch needed)."""
        import types

        import numpy as np

        from deepsim.geometry import Grid
        from DeepSimRegistrationLib.nodes import (
            make_transform_chain,
            resample_through_chain,
            volume_to_image,
        )

        self.delayDisplay("Transform chain")
        fixed = self._volume("fixed")
        moving = self._volume("moving", shift_mm=6.0)
        grid = volume_to_image(fixed).grid
        disp = np.zeros((3, *grid.shape), np.float32)
        # the moving blob sits 6 mm further along R (= +i here): fixed point x must read the
        # moving point x + 6 mm R; 3 mm come from the field (2 voxels of 1.5 mm along i) ...
        disp[2] = 2.0
        affine = np.eye(4)
        affine[0, 3] = -3.0  # ... and 3 mm from the affine (LPS x = -R)
        result = types.SimpleNamespace(
            model_disp=disp, model_grid=Grid(grid.shape, grid.index_to_lps), affine=affine
        )
        _, affineNode, _ = make_transform_chain(slicer.mrmlScene, result)
        warped = resample_through_chain(slicer.mrmlScene, volume_to_image(moving), affineNode, grid)
        ref = slicer.util.arrayFromVolume(fixed)
        self.assertLess(float(np.abs(warped - ref)[4:-4, 4:-4, 4:-4].max()), 2.0)
        self.delayDisplay("Transform chain passed")

    def test_Registration(self):
        """End to end with a tiny random model: nodes made, inputs untouched."""
        try:
            import torch  # noqa: F401
        except ImportError:
            self.delayDisplay("torch is not installed: registration step skipped")
            return
        import numpy as np

        from deepsim.modelio import save_model
        from deepsim.networks import NetworkConfig, build_network

        self.delayDisplay("Registration with a tiny model")
        fixed = self._volume("fixed")
        moving = self._volume("moving", shift_mm=3.0)
        before = slicer.util.arrayFromVolume(moving).copy()
        rc = NetworkConfig("registration", 3, [4, 8])
        ec = NetworkConfig("segmentation", 3, [4, 8], n_classes=2)
        path = os.path.join(slicer.app.temporaryPath, "deepsim_selftest_model.pt")
        config = {
            "name": "selftest",
            "spatial_dims": 3,
            "networks": {"registration": rc.to_dict(), "extractor": ec.to_dict()},
            "preprocessing": {"spacing": 3.0, "multiple": 4},
        }
        save_model(
            path, {"registration": build_network(rc), "extractor": build_network(ec)}, config
        )
        outputs = DeepSimRegistrationLogic().process(
            fixed, moving, model=path, device="cpu", affine=False
        )
        self.assertIsNotNone(outputs.outputTransform)
        self.assertEqual(
            outputs.heatmapVolume.GetImageData().GetDimensions(),
            fixed.GetImageData().GetDimensions(),
        )
        self.assertTrue(np.array_equal(before, slicer.util.arrayFromVolume(moving)))
        os.remove(path)
        self.delayDisplay("Registration passed")
