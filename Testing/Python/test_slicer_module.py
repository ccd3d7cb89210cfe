"""The Slicer module file, its .ui, packaging lists and extension metadata, headless: the module
imports with stubbed Qt-side modules, its Logic and self-test run on slicer-core, the .ui is
valid and has every widget the code uses, and CMake lists exactly the module folder's files."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import types
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
    preset = next(w for w in root.iter("widget") if w.get("name") == "presetComboBox")
    from DeepSimRegistrationLib.registration import PRESETS

    items = [i.find("property/string").text for i in preset.findall("item")]
    assert items == list(PRESETS) and items[0] == "recommended"
    # a multi-line log box, the similarity override under Advanced
    assert names["logTextEdit"] == "QPlainTextEdit"
    advanced = {w.get("name") for w in adv.iter("widget")}
    assert "similarityComboBox" in advanced


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


def test_extension_metadata_and_catalogue_entry():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(DeepSimRegistration\)", cmake, re.M)
    assert "add_subdirectory(DeepSimRegistration)" in cmake
    meta = dict(re.findall(r'^set\((EXTENSION_\w+) "([^"\n]*)"\)$', cmake, re.M))
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert meta.get(f"EXTENSION_{key}"), (
            f"EXTENSION_{key} missing or not on one double-quoted line"
        )
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"
    home = "https://github.com/deepsim-registration/SlicerDeepSimRegistration"
    assert meta["EXTENSION_HOMEPAGE"] == home
    # contributors are "Name (Organization)", the same in CMake and in the module
    module = import_module_file()
    assert meta["EXTENSION_CONTRIBUTORS"] == ", ".join(module.CONTRIBUTORS)
    assert all(re.fullmatch(r"[^(),]+ \([^(),]+\)", c) for c in module.CONTRIBUTORS)

    # the catalogue entry the Extensions Index takes (schema v1.0.2: required $schema,
    # category, scm_url; no other keys than the schema's), named like the CMake project
    entry = json.loads((REPO / "DeepSimRegistration.json").read_text())
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "enabled"}
    allowed |= {"scm_revision", "scm_type", "scm_url", "tier", "dicom_support_rule"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == "Registration" and entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"] == home and entry["scm_type"] == "git"
    assert entry["scm_revision"] == "main" and entry["tier"] in range(1, 6)
    assert isinstance(entry["enabled"], bool) and entry["build_subdirectory"] == "."
    assert not (REPO / "DeepSimRegistration.s4ext").exists()  # generated in the build tree

    # the files the URLs point at exist in the repository, and the icon is 128x128
    for url in (meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()):
        assert url.startswith(home.replace("github.com", "raw.githubusercontent.com") + "/main/")
        rel = url.split("/main/", 1)[1]
        assert (REPO / rel).is_file(), rel
    png = (REPO / "Resources" / "DeepSimRegistration.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 128 and int.from_bytes(png[20:24], "big") == 128
    assert "Apache License" in (REPO / "LICENSE").read_text()
    # the README links the paper
    assert module.PAPER_URL in (REPO / "README.md").read_text()


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


def _selectors() -> dict:
    """SlicerParameterName -> (node types, showChildNodeTypes) of each node selector."""
    out = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        if w.get("class") != "qMRMLNodeComboBox":
            continue
        props = {p.get("name"): p for p in w.findall("property")}
        types = [t.text for t in props["nodeTypes"].iter("string")]
        children = props.get("showChildNodeTypes")
        show = children is None or children.find("bool").text == "true"
        out[props["SlicerParameterName"].find("string").text] = (types, show)
    return out


def synthetic_result(fixed, moving):
    """A computed registration made by hand (no child process): a small constant displacement."""
    from DeepSimRegistrationLib.nodes import volumeToImage
    from DeepSimRegistrationLib.registration import HEATMAP_NAMES, ComputedRegistration

    grid = volumeToImage(fixed).grid
    ones = np.ones(grid.shape, np.float32)
    return ComputedRegistration(
        fixedGrid=grid,
        displacement=np.full((*grid.shape, 3), 0.5, np.float32),
        warped=ones,
        heatmaps={name: 0.5 * ones for name in HEATMAP_NAMES},
        jacobian=ones,
        summary={"runtime_s": 1.0, "device": "cpu", "model": "brain-3d", "folding_percent": 0.0},
        fixedNodeID=fixed.GetID(),
        movingNodeID=moving.GetID(),
    )


def make_pair(scene):
    m = oblique_ijk_to_ras()
    fixed = add_volume(scene, phantom((12, 14, 16), m, seed=1), m, "fixed")
    moving = add_volume(scene, phantom((12, 14, 16), m, seed=2), m, "moving")
    return fixed, moving


def logic_with_pair():
    """A fresh scene with a pair, the module's Logic and its parameter node holding the pair."""
    scene = new_scene()
    module = import_module_file()
    fixed, moving = make_pair(scene)
    logic = module.DeepSimRegistrationLogic()
    p = logic.getParameterNode()
    p.fixedVolume, p.movingVolume = fixed, moving
    return scene, logic, p, fixed, moving


def test_every_node_class_written_into_a_selector_is_one_it_lists():
    scene, logic, p, fixed, moving = logic_with_pair()
    job = types.SimpleNamespace(result=lambda: synthetic_result(fixed, moving))
    logic.finishRegistration(job, p)
    written = {
        "outputTransform": p.outputTransform,
        "heatmapVolume": p.heatmapVolume,
        "jacobianVolume": p.jacobianVolume,
    }
    selectors = _selectors()
    for name, node in written.items():
        types_, children = selectors[name]
        assert node is not None, name
        listed = node.GetClassName() in types_ or (children and any(node.IsA(t) for t in types_))
        assert listed, f"{name}: {node.GetClassName()} is not listed by its selector {types_}"
    # transforms other registration modules write are listed too (Elastix, ANTs: grid, b-spline)
    types_, children = selectors["outputTransform"]
    for cls in ("vtkMRMLGridTransformNode", "vtkMRMLBSplineTransformNode"):
        assert children and any(scene.CreateNodeByClass(cls).IsA(t) for t in types_)
    # a second Register with these outputs selected is ready to run
    assert logic.whyNotReady(p, "brain-3d") == ""


@pytest.mark.parametrize("output", ["outputVolume", "heatmapVolume", "jacobianVolume"])
def test_register_is_disabled_when_an_output_is_an_input(output):
    scene, logic, p, fixed, moving = logic_with_pair()
    assert logic.whyNotReady(p, "brain-3d") == ""
    setattr(p, output, moving)
    assert "moving volume" in logic.whyNotReady(p, "brain-3d")
    setattr(p, output, fixed)
    assert "fixed volume" in logic.whyNotReady(p, "brain-3d")
    setattr(p, output, None)
    assert "model" in logic.whyNotReady(p, None)


def test_parameter_node_restores_the_panel_after_a_scene_round_trip(tmp_path):
    scene = new_scene()
    module = import_module_file()
    fixed, moving = make_pair(scene)
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "out")
    p = module.DeepSimRegistrationLogic().getParameterNode()
    values = {
        "fixedVolume": fixed,
        "movingVolume": moving,
        "fixedMask": mask,
        "outputTransform": transform,
        "model": "brain-3d-ae",
        "device": "cpu",
        "similarity": "ncc",
        "preset": "best",
        "affine": False,
        "ioSteps": 40,
        "modelSpacing": 2.5,
        "heatmap": "ncc_before",
        "heatmapOpacity": 0.3,
    }
    for name, value in values.items():
        setattr(p, name, value)
    with pytest.raises(ValueError):
        p.preset = "medium"
    with pytest.raises(ValueError):
        p.ioSteps = -2
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    loaded = new_scene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Connect()
    again = module.DeepSimRegistrationLogic().getParameterNode()
    for name, value in values.items():
        got = getattr(again, name)
        if hasattr(value, "GetName"):
            assert got is not None and got.GetName() == value.GetName(), name
        else:
            assert got == value, name
    assert again.movingMask is None and again.outputVolume is None
    # every field the .ui binds is a parameter-node field
    fields = set(module.DeepSimRegistrationParameterNode.__annotations__)
    assert set(_selectors()) <= fields


def test_model_list_comes_from_the_catalogue_by_dimension_with_the_documented_default():
    from deepsim.api import catalogue, default_model

    scene = new_scene()
    module = import_module_file()
    fixed, _ = make_pair(scene)
    logic = module.DeepSimRegistrationLogic()
    names3 = logic.modelNames(fixed)
    assert names3 and names3[0] == default_model(3).path.stem == "general-3d"
    assert all(catalogue()[n].spatial_dims == 3 for n in names3)
    m = oblique_ijk_to_ras()
    slice_ = add_volume(scene, phantom((1, 20, 22), m), m, "slice")
    names2 = logic.modelNames(slice_)
    assert names2 and all(catalogue()[n].spatial_dims == 2 for n in names2)
    assert not set(names2) & set(names3)


def test_torch_version_is_checked_against_the_minimum(monkeypatch):
    module = import_module_file()
    logic = module.DeepSimRegistrationLogic()
    assert module.versionTuple("2.13.0+cpu") == (2, 13, 0)
    assert module.versionTuple("2.1.0a0") == (2, 1, 0)
    monkeypatch.setattr(logic, "installedTorchVersion", lambda: "1.13.1")
    with pytest.raises(RuntimeError, match=r"1\.13\.1 is installed.*2\.1 or newer.*PyTorch Utils"):
        logic.ensureTorch(askConfirmation=False)
    monkeypatch.setattr(logic, "installedTorchVersion", lambda: "2.13.0+cpu")
    assert logic.ensureTorch(askConfirmation=False)


def test_devices_are_the_ones_torch_sees():
    pytest.importorskip("torch")
    import torch

    from DeepSimRegistrationLib.devices import probeDevices

    devices = probeDevices(sys.executable)
    assert devices[0] == ("auto", "auto") and devices[-1] == ("CPU", "cpu")
    gpus = [d for d in devices if d[1] == "cuda"]
    assert len(gpus) == (1 if torch.cuda.is_available() else 0)
    with pytest.raises(RuntimeError, match="PyTorch does not load"):
        probeDevices("/bin/false")


def test_reload_drops_the_module_libraries():
    module = import_module_file()
    import DeepSimRegistrationLib.registration as before

    dropped = module.reloadLibraries()
    assert "DeepSimRegistrationLib.registration" in dropped and "deepsim.api" in dropped
    import DeepSimRegistrationLib.registration as after

    assert after is not before


def _python_files():
    files = [MODULE_FILE, *sorted((MODULE_DIR / "DeepSimRegistrationLib").glob("*.py"))]
    files += [f for f in sorted((MODULE_DIR / "deepsim").glob("*.py"))]
    return files


def test_translated_strings_are_plain_literals():
    """``_()``/``translate()`` get a literal string: no f-string, no concatenation, no format
    inside the call (the translation tools extract literals only)."""
    import ast

    tree = ast.parse(MODULE_FILE.read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("_", "translate")
    ]
    assert len(calls) > 20
    for call in calls:
        texts = call.args[-1:]  # translate(context, text), _(text)
        assert all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args), (
            f"line {call.lineno}: translated text must be a literal string"
        )
        assert texts


def test_code_parses_with_the_oldest_supported_python():
    """The extension's code (module, Lib, the deepsim runtime it ships) parses with the Python
    of the oldest supported Slicer."""
    import ast

    module = import_module_file()
    assert module.MINIMUM_PYTHON == (3, 10)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject
    for path in _python_files():
        ast.parse(path.read_text(), filename=str(path), feature_version=module.MINIMUM_PYTHON)
    # and the check is real: newer syntax is refused at that version
    with pytest.raises(SyntaxError):
        ast.parse("def f[T](x: T) -> T: return x", feature_version=module.MINIMUM_PYTHON)


def test_summary_shows_time_device_similarity_folding_dice_and_kept_field():
    module = import_module_file()
    text = module.DeepSimRegistrationLogic.describe(
        {
            "runtime_s": 12.34,
            "device": "cpu",
            "model": "brain-3d",
            "folding_percent": 0.125,
            "similarity_deepsim_before": 0.41,
            "similarity_deepsim_after": 0.77,
            "similarity_ncc_before": 0.2,
            "similarity_ncc_after": 0.5,
            "dice_before": 0.6,
            "dice_after": 0.8,
            "engine_kept": "network",
        }
    )
    for part in ("12.3 s", "cpu", "brain-3d", "0.12%", "0.410 -> 0.770", "0.200 -> 0.500"):
        assert part in text, part
    assert "Dice: 0.600 -> 0.800" in text and "Kept the network field." in text
    assert len(text.splitlines()) == 6


def test_the_widget_talks_only_to_the_logic():
    """No import of the module's libraries inside the widget class: it calls the Logic."""
    import ast

    tree = ast.parse(MODULE_FILE.read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Widget"))
    imported = [
        alias.name if isinstance(n, ast.Import) else n.module
        for n in ast.walk(widget)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for alias in n.names
    ]
    assert not [m for m in imported if m.split(".")[0] in ("DeepSimRegistrationLib", "deepsim")]
    assert "self.logic." in ast.get_source_segment(MODULE_FILE.read_text(), widget)
