"""Soak: 20 back-to-back registrations in one process (as Slicer runs them), each writing its
outputs (three times with the figure) into the same folder, without growth in memory or open files."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

import pytest

from conftest import blob_image, oblique_grid
from deepsim.modelio import load_model
from deepsim.outputs import write_outputs
from deepsim.register import RegistrationOptions, register

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, glibc")


def resident_mb() -> float:
    """Resident memory after returning freed heap pages to the system (glibc ``malloc_trim``), so
    that what remains is memory still referenced, not the allocator's high-water mark."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_twenty_registrations_do_not_grow(tiny_model_2d, tmp_path):
    grid = oblique_grid((110, 120))  # one run's arrays ~0.5 MB: a leak shows over ten runs
    fixed, moving = blob_image(grid), blob_image(grid, centre_shift=[3.0, -2.0])
    model = load_model(tiny_model_2d)
    opts = RegistrationOptions(device="cpu", io_steps=0)
    out = tmp_path / "out"
    rss, fds = [], []
    for run in range(20):
        result = register(fixed, moving, model, opts)
        # the figure (1 s) on three runs, the two compared below included
        write_outputs(result, out, moving=moving, fixed=fixed, figure=run in (4, 9, 19))
        rss.append(resident_mb())
        fds.append(open_files())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folders left
    assert fds[-1] <= fds[4], f"open files grew: {fds}"
    # after a warm-up of ten runs (matplotlib's caches fill on its first figures) memory stays
    # flat: keeping each run's result alive would add ~0.5 MB a run, 5 MB over these ten
    assert rss[-1] - rss[9] < 2, f"resident memory grew (MB): {[round(r) for r in rss]}"
