"""Writing a registration's outputs: the output folder changes all at once or not at all.

The folder given as ``--out`` belongs to deepsim: it must be new, empty, or hold only files an
earlier run wrote (:data:`OUTPUT_NAMES`); a folder holding anything else is refused, so a user's
unrelated files are never touched. A run locks the folder (``flock``; a second run into it is
refused), writes every file into a hidden temporary sibling ``.NAME.deepsim-*`` and then swaps that
sibling in for the folder with one ``rename`` (an atomic exchange on Linux), so the folder holds
either the earlier run or the new one, whole, never a mixture. On any failure or interruption
the sibling is removed and the folder is left as it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .geometry import Grid, Image, model_grid, write_image
from .register import RegistrationResult

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, the swap alone keeps runs whole
    fcntl = None

__all__ = ["OUTPUT_NAMES", "OutputFolder", "write_outputs", "write_file_atomic", "save_overview"]

log = logging.getLogger(__name__)

OUTPUT_NAMES = frozenset(
    {
        "warped.nii.gz",
        "displacement.nii.gz",
        "similarity_deepsim_before.nii.gz",
        "similarity_deepsim_after.nii.gz",
        "similarity_ncc_before.nii.gz",
        "similarity_ncc_after.nii.gz",
        "jacobian.nii.gz",
        "warped_labels.nii.gz",
        "summary.json",
        "overview.png",
    }
)
"""Every file ``deepsim register`` may write: the only files a reusable output folder may hold."""


class OutputFolder:
    """An output folder replaced whole. Use as a context manager around the work::

        with OutputFolder(out) as folder:  # checks, locks, creates the staging sibling
            ...  # write into folder.staging
            folder.commit()  # swaps it in; without commit nothing changes

    Raises ``OSError`` (with a message naming the folder) when the folder cannot be used."""

    def __init__(self, out: str | Path):
        self.out = Path(os.path.abspath(Path(out).expanduser()))
        if self.out.is_symlink():
            self.out = self.out.resolve()
        self.staging: Path | None = None
        self._lock_fd: int | None = None
        self._created: list[Path] = []  # folders this run made, deepest first
        self._committed = False

    def __enter__(self) -> "OutputFolder":
        try:
            self._check()
            self._lock()
            self.staging = Path(
                tempfile.mkdtemp(prefix=f".{self.out.name}.deepsim-", dir=self.out.parent)
            )
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _check(self) -> None:
        out = self.out
        if out.parent == out or Path.cwd().is_relative_to(out):
            raise OSError(
                f"output folder {out} is the current folder or contains it; choose another"
            )
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(
                f"cannot create output folder {out}: a file of that name exists"
            )
        if out.is_dir():
            foreign = sorted(
                p.name + ("/" if p.is_dir() else "")
                for p in out.iterdir()
                if p.name not in OUTPUT_NAMES or not p.is_file() or p.is_symlink()
            )
            if foreign:
                shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
                raise FileExistsError(
                    f"output folder {out} holds {len(foreign)} item(s) deepsim did not write "
                    f"({shown}); deepsim replaces its output folder whole, so give a new or empty "
                    "folder, or one holding only an earlier deepsim run"
                )
        else:
            self._created = [p for p in (out, *out.parents) if not p.exists()]
            try:
                out.mkdir(parents=True)
            except OSError as err:
                self._created = []
                raise OSError(f"cannot create output folder {out}: {err.strerror}") from err
        if not os.access(out.parent, os.W_OK | os.X_OK) or not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {out} is not writable (nor its parent folder)")

    def _lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(
                f"another deepsim run is writing to {self.out}; wait for it or choose another folder"
            ) from None
        if os.fstat(fd).st_ino != os.stat(self.out).st_ino:  # replaced while we locked
            os.close(fd)
            raise BlockingIOError(
                f"another deepsim run just replaced {self.out}; run again to replace it"
            )
        self._lock_fd = fd

    def commit(self) -> None:
        """Swap the staging folder in for the output folder; the earlier content is removed."""
        _exchange(self.staging, self.out)
        self._committed = True

    def _release(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)  # after commit: the earlier run
            self.staging = None
        if not self._committed:
            for folder in self._created:  # made for the lock: leave no trace
                try:
                    folder.rmdir()
                except OSError:
                    break
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _renameat2():
    """Linux ``renameat2`` (atomic exchange of two paths), or None where unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(new: Path, out: Path) -> None:
    """Make ``out`` the content of ``new``; ``new`` then holds ``out``'s earlier content.

    One atomic ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it; otherwise two renames,
    undone if the second fails."""
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(out), _RENAME_EXCHANGE)
        if rc == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to two renames
            raise OSError(errno, f"cannot replace output folder {out}: {os.strerror(errno)}")
    old = new.with_name(new.name + "-old")
    os.rename(out, old)
    try:
        os.rename(new, out)
    except OSError as err:
        os.rename(old, out)
        raise OSError(err.errno, f"cannot replace output folder {out}: {err.strerror}") from err
    os.rename(old, new)


def write_file_atomic(write, path: str | Path) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` (same extension) and rename it onto
    ``path``: the file is replaced whole or not at all."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".deepsim-", suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_outputs(
    result: RegistrationResult,
    out: str | Path | OutputFolder,
    moving: Image | None = None,
    fixed: Image | None = None,
    figure: bool = True,
) -> list[Path]:
    """Write the command-line contract's files and make them the content of ``out`` at once
    (see :class:`OutputFolder`). ``out``: a path, or an :class:`OutputFolder` already entered."""
    if not isinstance(out, OutputFolder):
        with OutputFolder(out) as folder:
            return write_outputs(result, folder, moving, fixed, figure)
    tmp = out.staging
    names = []
    fixed_grid = result.fixed_grid
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    jobs = []

    def put(name: str, image: Image, vector: bool = False):
        jobs.append(pool.submit(write_image, image, tmp / name, vector))
        names.append(name)

    if result.warped is not None:
        put("warped.nii.gz", result.warped)
    put(
        "displacement.nii.gz",
        Image(result.displacement.astype(np.float32), fixed_grid),
        vector=True,
    )
    for key, image in result.heatmaps.items():
        put(f"similarity_{key}.nii.gz", image)
    put("jacobian.nii.gz", result.jacobian)
    if result.warped_labels is not None:
        put("warped_labels.nii.gz", result.warped_labels)
    with pool:
        for job in jobs:
            job.result()  # re-raises a failed write
    (tmp / "summary.json").write_text(
        json.dumps(result.summary.to_dict(), indent=2, allow_nan=False, default=_plain) + "\n"
    )
    names.append("summary.json")
    if figure and moving is not None and fixed is not None:
        try:
            save_overview(result, fixed, moving, tmp / "overview.png")
            names.append("overview.png")
        except ImportError:
            log.warning("matplotlib is not installed: overview.png not written")
    out.commit()
    return [out.out / n for n in names]


def _plain(value):
    """JSON for numpy scalars in the summary."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"summary value {value!r} is not JSON")


def save_overview(
    result: RegistrationResult, fixed: Image, moving: Image, path: str | Path
) -> None:
    """PNG of fixed / moving / warped / deformed grid / heatmaps / Jacobian. Everything is resampled
    onto a display grid in the standard orientation (3D: the middle axial slice, anterior up,
    radiological left-right), whatever the files' orientation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .geometry import resample, sample_on_grid

    display = _display_slice(fixed.grid)
    middle = 0 if display.spatial_dims == 3 else None

    def view(image: Image, interpolator: str = "linear") -> np.ndarray:
        arr = resample(image, display, None, interpolator).array.astype(np.float32)
        return arr if middle is None else arr[middle]

    heat = result.heatmaps
    panels = [
        ("fixed", view(fixed), "gray", None),
        ("moving (unregistered)", view(moving), "gray", None),
        ("warped moving", view(result.warped) if result.warped is not None else None, "gray", None),
    ]
    for key in ("deepsim_before", "deepsim_after", "ncc_after"):
        if key in heat:
            panels.append(
                (f"similarity {key.replace('_', ' ')}", view(heat[key]), "inferno", (0, 1))
            )
    jac_title = f"Jacobian (folding {result.summary.folding_percent:.2f} %)"
    panels.append((jac_title, view(result.jacobian), "RdBu_r", (0, 2)))
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    axes = axes.ravel()
    slots = [0, 1, 2, 4, 5, 6, 7][: len(panels)]
    for slot, (title, img, cmap, rng) in zip(slots, panels):
        ax = axes[slot]
        if img is not None:
            im = ax.imshow(
                img,
                cmap=cmap,
                vmin=None if rng is None else rng[0],
                vmax=None if rng is None else rng[1],
            )
            if rng is not None:
                fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title)
    disp = sample_on_grid(np.moveaxis(result.displacement, -1, 0), result.fixed_grid, display)
    vox = np.moveaxis(np.tensordot(np.linalg.inv(display.linear), disp, axes=(1, 0)), 0, -1)
    _draw_grid(axes[3], view(fixed), vox if middle is None else vox[middle])
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _display_slice(grid: Grid) -> Grid:
    """The overview's display grid: ``grid``'s field of view in the standard orientation at its
    finest spacing; in 3D only the middle axial slice (one voxel thick), so the figure costs memory
    of one slice, not of a resampled volume."""
    display = model_grid(grid, float(grid.spacing.min()), multiple=1)
    if display.spatial_dims == 2:
        return display
    m = display.index_to_lps.copy()
    m[:3, 3] += m[:3, 0] * (display.shape[0] // 2)
    return Grid((1, *display.shape[1:]), m)


def _draw_grid(ax, background: np.ndarray, vox: np.ndarray, lines: int = 24) -> None:
    """Deformed grid: display-grid points moved by the in-slice displacement ``vox`` (voxels,
    last axis in tensor order; the last two components are in-slice)."""
    rows, cols = background.shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pr, pc = r + vox[..., -2], c + vox[..., -1]
    ax.imshow(background, cmap="gray", alpha=0.4)
    step = max(1, min(rows, cols) // lines)
    for i in range(0, rows, step):
        ax.plot(pc[i], pr[i], color="tab:orange", lw=0.6)
    for j in range(0, cols, step):
        ax.plot(pc[:, j], pr[:, j], color="tab:orange", lw=0.6)
    ax.set_xlim(0, cols - 1)
    ax.set_ylim(rows - 1, 0)
    ax.set_title("deformation grid (mapping to moving)")
