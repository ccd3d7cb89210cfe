"""The package's layering and distribution: the runtime never imports training code, the API and
catalogue need no torch, and a built wheel installs on its own and registers with its models."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "DeepSimRegistration" / "deepsim"


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the deepsim modules ``path`` imports (relative imports resolved)."""
    package = ["deepsim", *path.relative_to(PACKAGE).parent.parts]
    out = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {n for n in out if n.startswith("deepsim")}


def test_runtime_never_imports_training_code():
    """Only the ``train`` and ``evaluate`` commands of the CLI reach into deepsim.training, on use
    (the extension ships without it)."""
    runtime = [p for p in PACKAGE.glob("*.py")]
    assert len(runtime) > 10
    offenders = {
        p.name: sorted(
            n for n in _imports(p, p.name == "cli.py") if n.startswith("deepsim.training")
        )
        for p in runtime
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_api_and_catalogue_need_no_torch():
    code = (
        "import sys; from deepsim.api import catalogue, default_model, Cancelled, "
        "RegistrationOptions; m = catalogue(); assert default_model(3).name == 'general-3d', m; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print(sorted(m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False
    )
    assert out.returncode == 0, out.stderr
    assert "general-2d" in out.stdout


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "DeepSimRegistration"), env.get("PYTHONPATH", "")]
    )
    return env


def _source_copy(dst: Path) -> Path:
    """The repository's files as git sees them (tracked and new, not ignored), without builds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    return dst


def test_wheel_installs_in_a_fresh_venv_and_registers(tmp_path):
    """Build the wheel, install it (no source tree on the path) into a new venv whose only other
    packages are the runtime dependencies, and register a small 2D pair with the shipped default."""
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("deepsim_registration-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # torch, numpy and SimpleITK from this environment, as a plain path (its .pth files, among
    # them the editable install of the source tree, are not processed)
    Path(purelib, "runtime_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    yy, xx = np.mgrid[:96, :96].astype(np.float32)
    for name, shift in (("fixed", 0.0), ("moving", 3.0)):
        img = np.exp(-((yy - 48) ** 2 + (xx - 48 - shift) ** 2) / 300.0) * 100 + 10
        sitk.WriteImage(sitk.GetImageFromArray(img), str(work / f"{name}.nii.gz"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEEPSIM_MODELS")}
    where = subprocess.run(
        [py, "-c", "import deepsim.api as a; print(a.__file__); print(a.default_model(2).path)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(w.startswith(str(venv)) for w in where), where
    run = subprocess.run(
        [venv / "bin" / "deepsim", "register", "fixed.nii.gz", "moving.nii.gz", "--out", "out"]
        + ["--no-figure", "--device", "cpu"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "with general-2d" in run.stdout
    assert (work / "out" / "displacement.nii.gz").is_file()


def test_the_readme_library_example_runs(tmp_path):
    """The README's Python example, as written, on a small 2D pair in the working folder."""
    text = (REPO / "README.md").read_text()
    code = text.split("## Library", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    yy, xx = np.mgrid[:80, :80].astype(np.float32)
    for name, shift in (("fixed", 0.0), ("moving", 4.0)):
        img = np.exp(-((yy - 40 - shift) ** 2 + (xx - 40) ** 2) / 200.0) * 100 + 5
        sitk.WriteImage(sitk.GetImageFromArray(img), str(tmp_path / f"{name}.nii.gz"))
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    folding, shape = run.stdout.split(" ", 1)
    assert 0 <= float(folding) < 1 and shape.strip() == "(80, 80, 2)"
