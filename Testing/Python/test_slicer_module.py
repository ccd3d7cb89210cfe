"""The Slicer module file, its .ui, packaging lists and extension metadata, headless: the module
imports with stubbed Qt-side modules, its Logic and self-test run on slicer-core, the .ui is
valid and has every widget the code uses, and CMake lists exactly the module folder's files."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from slicer_stubs import (  # noqa: E402
    MODULE_DIR,
    REPO,
    _Parent,
    add_volume,
    import_module_file,
    model_for_tests,
    new_scene,
    oblique_ijk_to_ras,
    phantom,
    scene_ids,
)

MODULE_FILE = MODULE_DIR / "DeepSimRegistration.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "DeepSimRegistration.ui"


def test_module_imports_without_torch_and_has_metadata():
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import slicer_stubs; slicer_stubs.new_scene();"
        "m = slicer_stubs.import_module_file(); assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'DeepSimRegistrationLib' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]

    new_scene()
    module = import_module_file()
    parent = _Parent()
    module.DeepSimRegistration(parent)
    assert parent.title and parent.categories == ["Registration"]
    assert parent.contributors and all(parent.contributors)
    assert "README" in parent.helpText.upper() or "documentation" in parent.helpText
    assert module.README_URL in parent.helpText
    for word in ("Czolbe", "Krause", "Feragen", "MIDL 2021"):
        assert word in parent.acknowledgementText


def test_no_file_scope_heavy_imports_and_no_pip():
    src = MODULE_FILE.read_text()
    top = [ln for ln in src.splitlines() if re.match(r"^(import|from) ", ln)]
    assert not [ln for ln in top if re.search(r"\b(torch|deepsim|numpy|SimpleITK)\b", ln)], top
    assert "pip_install" not in src and "pip install" not in src
    assert "installTorch" in src and "PyTorchUtils" in src


def test_logic_runs_end_to_end(tmp_path):
    scene = new_scene()
    module = import_module_file()
    fm = oblique_ijk_to_ras(spacing=(1.4, 1.2, 1.5))
    mm = oblique_ijk_to_ras(spacing=(1.4, 1.2, 1.5), origin=(13.0, -30.0, 8.0))
    shape = (24, 28, 26)
    fixed = add_volume(scene, phantom(shape, fm, seed=1), fm, "fixed")
    moving = add_volume(scene, phantom(shape, mm, shift_ras=(2.0, 0.0, -1.0), seed=2), mm, "moving")
    before = slicer.util.arrayFromVolume(moving).copy()
    logic = module.DeepSimRegistrationLogic()
    assert logic.ensureTorch(askConfirmation=False)
    outputs = logic.process(
        fixed,
        moving,
        model=str(model_for_tests(tmp_path)),
        device="cpu",
        ioSteps=2,
        createOutputVolume=True,
    )
    assert outputs.summary["io_steps"] == 2
    assert (
        outputs.outputVolume.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
    )
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(moving), before)
    text = logic.describe(outputs)
    assert "Folding" in text and outputs.affineTransform.GetName() in text
    # the parameter node class binds the documented fields
    fields = module.DeepSimRegistrationParameterNode.__annotations__
    assert {"fixedVolume", "movingVolume", "outputTransform", "ioSteps", "affine"} <= set(fields)


def test_self_test_runs_headless():
    new_scene()
    module = import_module_file()
    slicer.mrmlScene.Clear()
    case = module.DeepSimRegistrationTest()
    case.runTest()


def test_ui_is_valid_and_has_every_widget_the_module_uses():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    names = {w.get("name"): w.get("class") for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used, "the module file uses no widgets?"
    missing = sorted(used - set(names))
    assert not missing, f"widgets used in DeepSimRegistration.py but absent from the .ui: {missing}"
    # every SlicerParameterName is a parameter-node field
    module_src = MODULE_FILE.read_text()
    params = [
        p.find("string").text
        for p in root.iter("property")
        if p.get("name") == "SlicerParameterName"
    ]
    for name in params:
        assert re.search(rf"^\s+{name}:", module_src, re.M), f"{name} is not a parameter-node field"
    # every node selector gets the scene
    combos = {n for n, c in names.items() if c == "qMRMLNodeComboBox"}
    receivers = {c.find("receiver").text for c in root.iter("connection")}
    assert combos <= receivers
    # the advanced section starts collapsed; quality presets are there
    adv = next(w for w in root.iter("widget") if w.get("name") == "advancedCollapsibleButton")
    assert any(
        p.get("name") == "collapsed" and p.find("bool").text == "true"
        for p in adv.findall("property")
    )
    quality = next(w for w in root.iter("widget") if w.get("name") == "qualityComboBox")
    from DeepSimRegistrationLib.registration import QUALITY_PRESETS

    items = [i.find("property/string").text for i in quality.findall("item")]
    assert items == list(QUALITY_PRESETS) and items[0] == "recommended"


def _cmake_list(text: str, variable: str) -> list[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [
        ln.strip().replace("${MODULE_NAME}", "DeepSimRegistration")
        for ln in body.split()
        if ln.strip()
    ]


def test_cmake_lists_every_module_file():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS") + _cmake_list(
        cmake, "MODULE_PYTHON_RESOURCES"
    )
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "."],
        cwd=MODULE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [f for f in files if "__pycache__" not in f and Path(f).name != "CMakeLists.txt"]
    # deepsim/training is the 'train' extra of the wheel; the extension ships the runtime only
    assert not [f for f in listed if f.startswith("deepsim/training/")]
    files = [f for f in files if not f.startswith("deepsim/training/")]
    # CMakeLists.txt files are build inputs, reached through add_subdirectory(Testing)
    assert "add_subdirectory(Testing)" in cmake
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest" in cmake
    not_listed = sorted(set(files) - set(listed))
    assert not not_listed, f"add these to DeepSimRegistration/CMakeLists.txt: {not_listed}"
    absent = sorted(f for f in listed if not (MODULE_DIR / f).is_file())
    assert not absent, f"listed in DeepSimRegistration/CMakeLists.txt but missing: {absent}"
    assert all(f.endswith(".py") for f in _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS"))


def test_extension_metadata_and_s4ext_agree():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(DeepSimRegistration\)", cmake, re.M)
    assert "add_subdirectory(DeepSimRegistration)" in cmake
    meta = dict(re.findall(r'^set\((EXTENSION_\w+) "([^"\n]*)"\)$', cmake, re.M))
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert meta.get(f"EXTENSION_{key}"), (
            f"EXTENSION_{key} missing or not on one double-quoted line"
        )
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"
    assert (
        meta["EXTENSION_HOMEPAGE"]
        == "https://github.com/deepsim-registration/SlicerDeepSimRegistration"
    )
    s4 = {}
    for line in (REPO / "DeepSimRegistration.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            s4[key] = value.strip()
    assert s4["category"] == "Registration" and s4["depends"] == "PyTorch"
    assert s4["homepage"] == meta["EXTENSION_HOMEPAGE"]
    assert s4["iconurl"] == meta["EXTENSION_ICONURL"]
    assert s4["screenshoturls"] == meta["EXTENSION_SCREENSHOTURLS"]
    assert s4["description"] == meta["EXTENSION_DESCRIPTION"]
    assert s4["contributors"] == meta["EXTENSION_CONTRIBUTORS"]
    # the files the URLs point at exist in the repository, and the icon is 128x128
    for url in (meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()):
        rel = url.split("/main/", 1)[1]
        assert (REPO / rel).is_file(), rel
    png = (REPO / "Resources" / "DeepSimRegistration.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 128 and int.from_bytes(png[20:24], "big") == 128
    assert "Apache License" in (REPO / "LICENSE").read_text()


def test_sample_data_checksums_and_sources():
    from DeepSimRegistrationLib.sampledata import findSampleDataFolder, sampleDataSources

    folder = findSampleDataFolder(MODULE_DIR)
    assert folder == REPO / "DeepSimRegistration" / "Resources" / "SampleData"
    spec = json.loads((folder / "sample_data.json").read_text())
    for sample in spec["samples"]:
        for f in sample["files"]:
            data = (folder / f["fileName"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"], f["fileName"]
    sources = sampleDataSources(folder)
    assert sources and all(u.startswith("file://") for s in sources for u in s["uris"])
    assert all(c.startswith("SHA256:") for s in sources for c in s["checksums"])

    # the sample volumes load into a scene (NRRD reader of slicer-core)
    scene = new_scene()
    for uri in sources[0]["uris"]:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(uri[len("file://") :])
        assert storage.ReadData(node)
        assert 64 <= min(node.GetImageData().GetDimensions()) <= 96
    assert len(scene_ids(scene)) >= 4
