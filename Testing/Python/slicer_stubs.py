"""Shared helpers of the Slicer-glue tests (``test_slicer_*.py``): a fresh slicer-core scene,
oblique volume nodes, a tiny model file, and stubs for the Qt-side modules slicer-core lacks
(``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.i18n``,
``slicer.parameterNodeWrapper``) so that ``DeepSimRegistration.py`` can be imported headless."""

from __future__ import annotations

import importlib
import sys
import types
import typing
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
    from DeepSimRegistrationLib.nodes import setScalarVolume

    return setScalarVolume(scene, None, array_kji, ijk_to_ras, name)


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
        return _Anything()

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


def _parameter_node_wrapper_module() -> types.ModuleType:
    """The persistence contract of Slicer's ``parameterNodeWrapper`` (which needs Qt, so
    slicer-core lacks it, and whose code may not be copied here): each annotated field is a
    property stored in the wrapped ``vtkMRMLScriptedModuleNode``, node fields as node references
    named after the field, other fields as string parameters; defaults apply while a parameter
    is unset; ``Choice`` and ``WithinRange`` are enforced on assignment; a wrong node class is
    refused. The GUI binding (``connectGui``) is the application's and is a no-op here."""
    import slicer

    mod = types.ModuleType("slicer.parameterNodeWrapper")

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

        def check(self, name, value):
            if value not in self.choices:
                raise ValueError(f"{name}: {value!r} is not one of {self.choices}")

    class WithinRange:
        def __init__(self, lo, hi):
            self.lo, self.hi = lo, hi

        def check(self, name, value):
            if not self.lo <= value <= self.hi:
                raise ValueError(f"{name}: {value!r} is outside [{self.lo}, {self.hi}]")

    def node_classes(hint):
        args = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
        classes = tuple(a for a in args if a is not type(None))
        if classes and all(
            isinstance(c, type) and issubclass(c, slicer.vtkMRMLNode) for c in classes
        ):
            return classes
        return None

    def field(name, hint, default):
        validators = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *validators = typing.get_args(hint)
        classes = node_classes(hint)

        def get(self):
            node = self.parameterNode
            if classes:
                return node.GetNodeReference(name)
            text = node.GetParameter(name)
            if text == "" and name not in _names(node):
                return default
            if hint is bool:
                return text == "True"
            return hint(text)

        def set_(self, value):
            node = self.parameterNode
            if classes:
                if value is not None and not isinstance(value, classes):
                    raise TypeError(f"{name}: {value.GetClassName()} is not one of {classes}")
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            value = hint(value)
            for validator in validators:
                validator.check(name, value)
            node.SetParameter(name, str(value))

        return property(get, set_)

    def _names(node):
        return set(node.GetParameterNames())

    def parameterNodeWrapper(cls):
        hints = typing.get_type_hints(cls, include_extras=True)

        def init(self, node):
            object.__setattr__(self, "parameterNode", node)

        for name, hint in hints.items():
            setattr(cls, name, field(name, hint, cls.__dict__.get(name)))
        cls.__init__ = init
        # observers go to the wrapped node (the module template observes the wrapper)
        cls.AddObserver = lambda self, *a: self.parameterNode.AddObserver(*a)
        cls.RemoveObserver = lambda self, *a: self.parameterNode.RemoveObserver(*a)
        cls.connectGui = lambda self, ui: object()
        cls.disconnectGui = lambda self, tag: None
        cls.__annotations__ = dict(hints)
        return cls

    mod.parameterNodeWrapper = parameterNodeWrapper
    mod.Choice = Choice
    mod.WithinRange = WithinRange
    return mod


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

        def setup(self):
            self.layout = _Anything()

        def onReload(self):
            pass

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

    sys.modules["slicer.parameterNodeWrapper"] = _parameter_node_wrapper_module()
    slicer.parameterNodeWrapper = sys.modules["slicer.parameterNodeWrapper"]

    class _App:
        temporaryPath = "/tmp"

        def connect(self, *args):
            pass

        def processEvents(self):
            pass

        def setOverrideCursor(self, cursor):
            pass

        def restoreOverrideCursor(self):
            pass

        def testingEnabled(self):
            return True  # error displays are logged, not shown

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
