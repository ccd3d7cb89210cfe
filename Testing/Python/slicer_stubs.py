"""Shared helpers of the Slicer-glue tests (``test_slicer_*.py``): a fresh slicer-core scene,
oblique volume nodes, a tiny model file, and stubs for the Qt-side modules slicer-core lacks
(``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.i18n``,
``slicer.parameterNodeWrapper``) so that ``DeepSimRegistration.py`` can be imported headless."""

from __future__ import annotations

import importlib
import sys
import types
import unittest
from pathlib import Path

import numpy as np

from oblique import rotation

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "DeepSimRegistration"


def new_scene():
    """A fresh ``vtkMRMLScene``, also set as ``slicer.mrmlScene`` (as slicer.util expects)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    return scene


def scene_ids(scene) -> list[str]:
    return [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())]


def oblique_ijk_to_ras(
    spacing=(1.3, 0.9, 1.7), origin=(12.5, -31.0, 7.25), angles=(0.3, -0.2, 0.25)
):
    """An oblique, anisotropic, non-zero-origin IJKToRAS (columns i, j, k)."""
    m = np.eye(4)
    m[:3, :3] = rotation(3, angles) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def phantom(shape_kji, ijk_to_ras, shift_ras=(0.0, 0.0, 0.0), seed=None) -> np.ndarray:
    """Smooth blobs + a ramp evaluated in RAS world coordinates (so geometry matters)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_kji], indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], -1)
    ras = (ijk @ ijk_to_ras.T)[..., :3] - np.asarray(shift_ras)
    centre = (np.array([*(np.array(shape_kji[::-1]) - 1) / 2, 1.0]) @ ijk_to_ras.T)[:3]
    rel = ras - centre
    val = 150 * np.exp(-0.5 * ((rel / np.array([8.0, 11.0, 9.0])) ** 2).sum(-1))
    val += 80 * np.exp(-0.5 * (((rel - np.array([6.0, -5.0, 3.0])) / 4.0) ** 2).sum(-1))
    val += 0.3 * rel[..., 0] + 20
    if seed is not None:
        val += np.random.default_rng(seed).normal(0, 1, val.shape)
    return val.astype(np.float32)


def add_volume(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str):
    from DeepSimRegistrationLib.nodes import set_scalar_volume

    return set_scalar_volume(scene, None, array_kji, ijk_to_ras, name)


def make_tiny_model(path, channels=(4, 8), spacing=3.0, multiple=4, seed=0):
    """A tiny random-init 3D model file (the registration net predicts ~identity)."""
    import torch

    from deepsim.modelio import save_model
    from deepsim.networks import NetworkConfig, build_network

    torch.manual_seed(seed)
    rc = NetworkConfig("registration", 3, list(channels))
    ec = NetworkConfig("segmentation", 3, list(channels), n_classes=2)
    config = {
        "name": "tiny-slicer-3d",
        "spatial_dims": 3,
        "networks": {"registration": rc.to_dict(), "extractor": ec.to_dict()},
        "preprocessing": {"spacing": spacing, "multiple": multiple},
        "loss": {"similarity": "deepsim", "lambda": 1.0},
    }
    save_model(path, {"registration": build_network(rc), "extractor": build_network(ec)}, config)
    return Path(path)


def model_for_tests(tmp_dir) -> Path:
    """The shipped 3D model when one exists, else a tiny random one in ``tmp_dir``."""
    from deepsim.api import ModelFileError, default_model

    try:
        return default_model(3).path
    except ModelFileError:
        pass
    return make_tiny_model(Path(tmp_dir) / "tiny3d.pt")


# --- stubs for importing DeepSimRegistration.py without the Slicer application ------------------


class _Anything:
    """Stands in for any Qt/ctk class or value."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


def _permissive_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)

    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything

    mod.__getattr__ = getattr_  # type: ignore[attr-defined]
    return mod


class _Parent:
    def __init__(self):
        self.title = ""
        self.categories = []
        self.dependencies = []
        self.contributors = []
        self.helpText = ""
        self.acknowledgementText = ""


def install_stubs() -> None:
    """Put stub modules into ``sys.modules`` (idempotent) and give ``slicer`` the attributes the
    module file touches (``slicer.app``)."""
    import slicer

    sys.modules.setdefault("qt", _permissive_module("qt"))
    sys.modules.setdefault("ctk", _permissive_module("ctk"))

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

        def resourcePath(self, filename):
            return str(MODULE_DIR / "Resources" / filename)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(
                "DeepSimRegistration", "vtkMRMLScriptedModuleNode"
            )
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag("DeepSimRegistration")
                node = slicer.mrmlScene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            print(message)

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(slm, cls.__name__, cls)
    slm.__all__ = [
        c.__name__
        for c in (
            ScriptedLoadableModule,
            ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest,
        )
    ]
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    slicer.ScriptedLoadableModule = slm

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    sys.modules["slicer.i18n"] = i18n
    slicer.i18n = i18n

    pnw = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        def init(self, node):
            self.parameterNode = node

        cls.__init__ = init
        return cls

    pnw.parameterNodeWrapper = parameterNodeWrapper
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    sys.modules["slicer.parameterNodeWrapper"] = pnw
    slicer.parameterNodeWrapper = pnw

    class _App:
        temporaryPath = "/tmp"

        def connect(self, *args):
            pass

        def processEvents(self):
            pass

    if not hasattr(slicer, "app"):
        slicer.app = _App()


def import_module_file():
    """Import ``DeepSimRegistration/DeepSimRegistration.py`` (the Slicer module) with stubs."""
    install_stubs()
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    if "DeepSimRegistration" in sys.modules:
        return importlib.reload(sys.modules["DeepSimRegistration"])
    return importlib.import_module("DeepSimRegistration")
