"""The hostile-input suite of issue 13: every case exits with the expected code, names the problem
in one line, and leaves a folder holding an earlier run byte-identical. Plus the output folder's
guarantees under fault injection, concurrency and SIGTERM, and a bad file in the models folder."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_cases as hc
from deepsim import cli, outputs

FORBIDDEN = ("Traceback", "weights_only", "np.int64", "np.float64", "itk::", "array(")


def run_cli(argv) -> tuple[int, str, str]:
    """``deepsim ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    def register(argv):
        rc, _, err = run_cli(argv)
        assert rc == 0, err

    return hc.make_env(tmp_path_factory.mktemp("hostile"), register)


@pytest.mark.parametrize("case", hc.CASES, ids=[c.id for c in hc.CASES])
def test_hostile_case(case, env, tmp_path):
    hc.prepare(env, tmp_path)
    argv = case.build(env, tmp_path)
    before = hc.snapshot(tmp_path)
    rc, out, err = run_cli(argv)
    if case.expect is None:
        assert rc == 0, err
        case.check(tmp_path)
        return
    assert rc == 2, f"exit {rc}: {out}{err}"
    lines = [line for line in err.splitlines() if line.startswith("deepsim")]
    assert len(lines) == 1 and case.expect in lines[0], err
    assert not any(word in err for word in FORBIDDEN), err
    assert hc.snapshot(tmp_path) == before, "files changed by a refused command"


def _earlier_run(env, tmp_path) -> tuple[Path, dict]:
    hc.prepare(env, tmp_path)
    return tmp_path / "prev", hc.snapshot(tmp_path)


def test_failed_commit_changes_nothing(env, tmp_path, monkeypatch):
    """Fault injection: the final swap fails (a target that cannot be replaced)."""
    out, before = _earlier_run(env, tmp_path)

    def refuse(new, target):
        raise OSError(16, f"cannot replace output folder {target}: Device or resource busy")

    monkeypatch.setattr(outputs, "_exchange", refuse)
    rc, _, err = run_cli(hc.reg(env, tmp_path))
    assert rc == 2 and "cannot replace output folder" in err
    assert hc.snapshot(tmp_path) == before  # no staging sibling left either


def test_failed_write_changes_nothing(env, tmp_path, monkeypatch):
    """Fault injection: the fourth output file cannot be written (disk full)."""
    out, before = _earlier_run(env, tmp_path)
    real, calls = outputs.write_image, []

    def failing(image, path, vector=False):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, f"cannot write {path}: No space left on device")
        real(image, path, vector)

    monkeypatch.setattr(outputs, "write_image", failing)
    rc, _, err = run_cli(hc.reg(env, tmp_path))
    assert rc == 2 and "No space left on device" in err
    assert hc.snapshot(tmp_path) == before


def test_exchange_fallback_restores_the_folder(tmp_path, monkeypatch):
    """Without renameat2 the swap is two renames; a failing second rename is undone."""
    new, out = tmp_path / "new", tmp_path / "out"
    new.mkdir()
    out.mkdir()
    (out / "summary.json").write_text("earlier")
    monkeypatch.setattr(outputs, "_RENAMEAT2", None)
    real = os.rename

    def rename(a, b):
        if Path(a) == new:
            raise OSError(18, "Invalid cross-device link")
        real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="cannot replace output folder"):
        outputs._exchange(new, out)
    assert (out / "summary.json").read_text() == "earlier" and new.is_dir()


def test_concurrent_run_is_refused(env, tmp_path):
    """A second run into a folder another run holds is refused before any work."""
    out, before = _earlier_run(env, tmp_path)
    with outputs.OutputFolder(out):
        rc, _, err = run_cli(hc.reg(env, tmp_path))
        assert rc == 2 and "another deepsim run is writing to" in err
    staged = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert staged == [] and hc.snapshot(tmp_path) == before


def test_output_folder_that_is_the_current_folder(env, tmp_path, monkeypatch):
    out, before = _earlier_run(env, tmp_path)
    monkeypatch.chdir(out)
    rc, _, err = run_cli(hc.reg(env, tmp_path)[:4] + ["."] + hc.reg(env, tmp_path)[5:])
    assert rc == 2 and "current folder" in err
    assert hc.snapshot(tmp_path) == before


def test_failure_into_a_new_folder_leaves_no_trace(env, tmp_path):
    (tmp_path / "in").mkdir()
    argv = hc.reg(env, tmp_path, None, hc._big(env, tmp_path, 1e300, float, "b.nii.gz"))
    argv[4] = tmp_path / "new" / "deeper"
    rc, _, err = run_cli(argv)
    assert rc == 2 and "float32 range" in err
    assert not (tmp_path / "new").exists()


def test_sigterm_cleans_up_like_ctrl_c(env, tmp_path):
    """SIGTERM mid-run: exit 130, the earlier run intact, no temporary folder left. The signal
    goes as soon as the run has made its staging folder; a 4x finer model grid keeps the run
    going well beyond that (the engine stops a level early once it has converged)."""
    out, before = _earlier_run(env, tmp_path)
    extra = ("--io-steps", "100000", "--model-spacing", "0.25")
    argv = [str(a) for a in hc.reg(env, tmp_path, None, None, *extra)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepsim", *argv], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not any(p.name.startswith(".prev.deepsim-") for p in tmp_path.iterdir()):
        assert time.time() < deadline and proc.poll() is None, "the run never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; nothing was written" in err
    assert hc.snapshot(tmp_path) == before


def test_bad_file_in_models_folder(env, tmp_path, monkeypatch):
    """Malformed files in the models folder: 'deepsim models' lists the good model and names the
    others; the default registration still runs."""
    import json

    from deepsim.api import catalogue_entry
    from deepsim.modelio import read_model_file

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "aaa-broken.pt").write_bytes(b"")  # no catalogue file
    (folder / "bbb-malformed.pt").write_bytes(b"")
    (folder / "bbb-malformed.json").write_text('{"name": 3')
    good = hc.make_model_file(folder / "good2d.pt", 2, spacing=1.0, info={"default": True})
    entry = catalogue_entry(read_model_file(good)[0])
    (folder / "good2d.json").write_text(json.dumps(entry))
    monkeypatch.setenv("DEEPSIM_MODELS", str(folder))
    rc, out, err = run_cli(["models"])
    assert rc == 0 and "good2d" in out
    assert "aaa-broken.pt: its catalogue file aaa-broken.json is missing" in err
    assert "bbb-malformed.pt: its catalogue file bbb-malformed.json is malformed" in err
    (tmp_path / "in").mkdir()
    argv = hc.reg(env, tmp_path)
    argv[4] = tmp_path / "out"
    rc, _, err = run_cli(argv[:5] + argv[7:])  # no --model: the default 2D model
    assert rc == 0, err
