"""The deepsim command end to end, as a user runs it, including every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REGISTER_OUTPUTS as OUTPUTS
from conftest import blob_image, oblique_grid
from deepsim.geometry import Image, to_sitk


def run(*args, check=True):
    cmd = [sys.executable, "-m", "deepsim", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write(image: Image, path):
    sitk.WriteImage(to_sitk(image), str(path))
    return path


@pytest.fixture(scope="module")
def pair2d(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair2d")
    grid = oblique_grid((40, 44))
    f = write(blob_image(grid), d / "fixed.nii.gz")
    m = write(blob_image(grid, centre_shift=[3.0, -2.0]), d / "moving.nii.gz")
    fl = write(Image((blob_image(grid).array > 150).astype(np.uint8), grid), d / "fl.nii.gz")
    ml = write(
        Image((blob_image(grid, [3.0, -2.0]).array > 150).astype(np.uint8), grid), d / "ml.nii.gz"
    )
    return f, m, fl, ml


def _with_labels(f, m, fl, ml, out, model) -> list:
    """``deepsim register`` arguments for a labelled pair on the CPU."""
    return ["register", f, m, "--out", out, "--model", model, "--device", "cpu"] + [
        "--fixed-labels",
        fl,
        "--moving-labels",
        ml,
    ]


def test_register_writes_the_contract(pair2d, tmp_path, tiny_model_2d):
    f, m, fl, ml = pair2d
    out = tmp_path / "out"
    proc = run(*_with_labels(f, m, fl, ml, out, tiny_model_2d))
    assert "registered in" in proc.stdout
    files = set(os.listdir(out))
    assert OUTPUTS | {"warped_labels.nii.gz", "overview.png"} <= files
    assert not [n for n in files if n.startswith(".deepsim-")]
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "runtime_s",
        "device",
        "model",
        "folding_percent",
        "similarity_deepsim_before",
        "similarity_deepsim_after",
        "similarity_ncc_before",
        "similarity_ncc_after",
        "dice_before",
        "dice_after",
    ):
        assert key in summary
    assert summary["dice_after"] > summary["dice_before"]
    assert f"kept the {summary['engine_kept']} field" in proc.stdout
    warped = sitk.ReadImage(str(out / "warped.nii.gz"))
    assert warped.GetSize() == sitk.ReadImage(str(f)).GetSize()


def test_warp_applies_the_written_transform(pair2d, tmp_path, tiny_model_2d):
    f, m, fl, ml = pair2d
    out = tmp_path / "out"
    run(*_with_labels(f, m, fl, ml, out, tiny_model_2d), "--io-steps", "3", "--no-figure")
    run(
        "warp",
        ml,
        "--transform",
        out / "displacement.nii.gz",
        "--out",
        tmp_path / "wl.nii.gz",
        "--nearest",
    )
    run("warp", m, "--transform", out / "displacement.nii.gz", "--out", tmp_path / "w.nii.gz")
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731
    assert np.array_equal(read(tmp_path / "wl.nii.gz"), read(out / "warped_labels.nii.gz"))
    assert np.allclose(read(tmp_path / "w.nii.gz"), read(out / "warped.nii.gz"), atol=1e-3)
    assert "is not a displacement field" in _error(
        "warp", m, "--transform", f, "--out", tmp_path / "x.nii.gz"
    )


def test_preset_similarity_and_io_steps_reach_the_engine(pair2d, tmp_path, tiny_model_2d):
    """--preset and --similarity choose the engine's settings, recorded in the summary;
    --io-steps 0 turns instance optimisation off."""
    from deepsim.presets import PRESETS

    f, m, *_ = pair2d
    cases = {
        "fast": ["--preset", "fast", "--similarity", "ncc+2*mind"],
        "off": ["--io-steps", "0"],
    }
    for name, extra in cases.items():
        out = tmp_path / name
        run("register", f, m, "--out", out, "--model", tiny_model_2d, "--no-figure", *extra)
        summary = json.loads((out / "summary.json").read_text())
        if name == "off":
            assert summary["io_steps"] == 0 and "engine" not in summary
        else:
            assert summary["preset"] == "fast"
            assert summary["engine"]["similarity"] == {"ncc": 1.0, "mind": 2.0}
            assert [lv["shrink"] for lv in summary["engine"]["levels"]] == [
                lv.shrink for lv in PRESETS["fast"]["levels"]
            ]
    assert "invalid choice: 'foo'" in _error(
        "register", f, m, "--out", tmp_path / "x", "--model", tiny_model_2d, "--similarity", "foo"
    )


def test_help_is_complete():
    text = run("register", "--help").stdout
    for needle in ("displacement.nii.gz", "resampling convention", "LPS", "--io-steps", "EXAMPLES"):
        assert needle in text


def _error(*args):
    proc = run(*args, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_missing_and_unreadable_files(pair2d, tmp_path, tiny_model_2d):
    f, m, *_ = pair2d
    assert "fixed image file not found" in _error(
        "register", tmp_path / "nope.nii.gz", m, "--out", tmp_path / "o", "--model", tiny_model_2d
    )
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    assert "cannot read moving image" in _error(
        "register", f, junk, "--out", tmp_path / "o", "--model", tiny_model_2d
    )


def test_2d_against_3d(pair2d, tmp_path, tiny_model_2d):
    f, *_ = pair2d
    vol = write(blob_image(oblique_grid((16, 16, 16))), tmp_path / "vol.nii.gz")
    assert "fixed image is 2D but moving image is 3D" in _error(
        "register", f, vol, "--out", tmp_path / "o", "--model", tiny_model_2d
    )


def test_model_for_the_wrong_dimension(pair2d, tmp_path, tiny_model_3d):
    f, m, *_ = pair2d
    err = _error("register", f, m, "--out", tmp_path / "o", "--model", tiny_model_3d)
    assert "3D model but the images are 2D" in err


def test_corrupt_model(pair2d, tmp_path):
    f, m, *_ = pair2d
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    assert "corrupt or not a deepsim model" in _error(
        "register", f, m, "--out", tmp_path / "o", "--model", bad
    )


def test_constant_and_nan_images_write_nothing(tmp_path, tiny_model_2d):
    grid = oblique_grid((32, 32))
    good = write(blob_image(grid), tmp_path / "good.nii.gz")
    const = write(Image(np.full((32, 32), 7, np.float32), grid), tmp_path / "const.nii.gz")
    nan = blob_image(grid).array.copy()
    nan[3, 4] = np.nan
    nanf = write(Image(nan, grid), tmp_path / "nan.mha")  # the NIfTI writer drops NaN
    out = tmp_path / "out"
    assert "moving image is constant" in _error(
        "register", good, const, "--out", out, "--model", tiny_model_2d
    )
    assert "fixed image has 1 NaN or infinite voxels" in _error(
        "register", nanf, good, "--out", out, "--model", tiny_model_2d
    )
    assert not out.exists()  # nothing changed: not even an empty folder is left


def test_non_overlapping_images(tmp_path, tiny_model_2d):
    f = write(blob_image(oblique_grid((32, 32))), tmp_path / "f.nii.gz")
    m = write(blob_image(oblique_grid((32, 32), origin=[700.0, 0.0])), tmp_path / "m.nii.gz")
    err = _error("register", f, m, "--out", tmp_path / "o", "--model", tiny_model_2d, "--no-affine")
    assert "do not overlap in physical space" in err


def test_unwritable_output_folder(pair2d, tmp_path, tiny_model_2d):
    f, m, *_ = pair2d
    if os.geteuid() == 0:  # root writes anywhere; /proc refuses even root
        ro = "/proc/deepsim-out"
        expected = "cannot create output folder"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        expected = "not writable"
    assert expected in _error("register", f, m, "--out", ro, "--model", tiny_model_2d)


def test_output_path_that_is_a_file(pair2d, tmp_path, tiny_model_2d):
    f, m, *_ = pair2d
    target = tmp_path / "afile"
    target.write_text("keep me")
    assert "cannot create output folder" in _error(
        "register", f, m, "--out", target, "--model", tiny_model_2d
    )
    assert target.read_text() == "keep me"


def test_unknown_model_name(pair2d, tmp_path):
    f, m, *_ = pair2d
    assert "unknown model 'nonsense'" in _error(
        "register", f, m, "--out", tmp_path / "o", "--model", "nonsense"
    )
