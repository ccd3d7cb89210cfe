"""The panel's code paths headless: the widget is built on fake Qt widgets (slicer-core has no
Qt) that keep the state the code sets, and driven like a user: Register starts the child
process, the timer's polls stream progress into the log, the results land in the scene and the
summary, Cancel and closing the scene stop the process. What the fakes cannot show (layout,
real signals, the look) needs the Slicer application."""

from __future__ import annotations

import sys
import time

import pytest

slicer = pytest.importorskip("slicer")

from slicer_stubs import (  # noqa: E402
    add_volume,
    import_module_file,
    new_scene,
    oblique_ijk_to_ras,
    phantom,
)


class Signal:
    """A signal (``connect``/``emit``), or a Qt method the code calls for effect only."""

    def __init__(self):
        self.slots = []

    def __call__(self, *args):
        return None

    def connect(self, *args):
        self.slots.append(args[-1])

    def emit(self, *args):
        for slot in self.slots:
            slot(*args)


class FakeWidget:
    """Keeps attributes; signals on demand; the combo box, log and progress methods used."""

    def __init__(self, name):
        self.name = name
        self.enabled, self.toolTip, self.text, self.value, self.format = True, "", "", 0, ""
        self.visible, self.items, self.currentIndex, self.currentPath = True, [], -1, ""
        self.lines, self.signals = [], {}

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self.signals.setdefault(attr, Signal())

    def connect(self, signal, slot):
        self.signals.setdefault(signal, Signal()).connect(slot)

    def click(self):
        self.signals["clicked(bool)"].emit()

    def setVisible(self, visible):
        self.visible = visible

    # combo box
    def addItem(self, text, data=None):
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def clear(self):
        self.items, self.currentIndex, self.lines = [], -1, []

    @property
    def count(self):
        return len(self.items)

    def itemText(self, n):
        return self.items[n][0]

    def findData(self, data):
        return next((n for n, (_, d) in enumerate(self.items) if d == data), -1)

    @property
    def currentText(self):
        return self.items[self.currentIndex][0] if self.currentIndex >= 0 else ""

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if self.currentIndex >= 0 else None

    def setCurrentText(self, text):
        found = [n for n, (t, _) in enumerate(self.items) if t == text]
        if found:
            self.currentIndex = found[0]

    def blockSignals(self, block):
        return False

    # log box
    def appendPlainText(self, text):
        self.lines.append(text)


class FakeUi:
    def __init__(self):
        self.widgets = {}

    def __getattr__(self, name):
        if name.startswith("__") or name == "widgets":
            raise AttributeError(name)
        return self.widgets.setdefault(name, FakeWidget(name))


@pytest.fixture
def panel(monkeypatch):
    scene = new_scene()
    module = import_module_file()
    ui = FakeUi()
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: FakeWidget("top"), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda w: ui, raising=False)
    m = oblique_ijk_to_ras(spacing=(1.4, 1.3, 1.5))
    fixed = add_volume(scene, phantom((22, 24, 26), m, seed=1), m, "fixed")
    moving = add_volume(scene, phantom((22, 24, 26), m, shift_ras=(2.0, 0, 0), seed=2), m, "moving")

    class Parent:
        isEntered = True

    widget = module.DeepSimRegistrationWidget(Parent())
    monkeypatch.setattr(module.DeepSimRegistrationLogic, "ensureTorch", lambda self, **kw: True)
    widget.setup()
    widget.logic.python = sys.executable
    widget.logic._devices = [("auto", "auto"), ("CPU", "cpu")]
    yield module, widget, ui, scene, fixed, moving
    widget.cleanup()  # as Slicer does when the module goes: observers of the scene removed


def run_timer(widget, timeout=120.0):
    end = time.monotonic() + timeout
    while widget._job is not None and time.monotonic() < end:
        widget._onTimer()
        time.sleep(0.05)
    assert widget._job is None, "the registration did not end"


def test_panel_selects_inputs_and_lists_models_for_their_dimension(panel):
    module, widget, ui, scene, fixed, moving = panel
    p = widget._parameterNode
    assert p.fixedVolume is fixed and p.movingVolume is moving
    assert ui.modelComboBox.currentText == "general-3d"
    assert ui.modelComboBox.itemText(ui.modelComboBox.count - 1) == module.MODEL_FILE_ITEM
    assert ui.registerButton.enabled
    p.outputVolume = moving  # would overwrite an input
    widget._updateRegisterButton()
    assert not ui.registerButton.enabled and "moving volume" in ui.registerButton.toolTip


def test_register_streams_progress_and_loads_the_results(panel):
    module, widget, ui, scene, fixed, moving = panel
    widget._parameterNode.ioSteps = 0
    ui.registerButton.click()
    assert widget._job is not None and not ui.registerButton.enabled and ui.cancelButton.visible
    run_timer(widget)
    p = widget._parameterNode
    assert p.outputTransform is not None and p.heatmapVolume is not None
    assert moving.GetParentTransformNode() is p.outputTransform  # no registered volume chosen
    assert "Done in" in ui.summaryLabel.text and "Folding" in ui.summaryLabel.text
    assert any("predicting" in line for line in ui.logTextEdit.lines)
    assert ui.progressBar.value == 100 and ui.saveOutputsButton.enabled
    assert ui.registerButton.enabled and not ui.cancelButton.visible


def test_cancel_and_scene_close_stop_the_process(panel):
    module, widget, ui, scene, fixed, moving = panel
    ids = [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())]
    ui.registerButton.click()
    job = widget._job
    ui.cancelButton.click()
    assert job.process._process.poll() is not None  # killed, not waiting for a stage
    run_timer(widget, timeout=10)
    assert any("Cancelled" in line for line in ui.logTextEdit.lines)
    assert [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())] == ids

    ui.registerButton.click()
    job = widget._job
    widget.onSceneStartClose(None, None)
    assert job.state == "cancelled" and job.process._process.poll() is not None
    assert widget._job is None
    assert "scene was closed" in ui.logTextEdit.lines[-1]
