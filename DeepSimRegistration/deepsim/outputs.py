"""Writing a registration's outputs: all files or none."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .geometry import Image, write_image
from .register import RegistrationResult

__all__ = ["write_outputs", "save_overview"]

log = logging.getLogger(__name__)


def write_outputs(
    result: RegistrationResult,
    out: str | Path,
    moving: Image | None = None,
    fixed: Image | None = None,
    figure: bool = True,
) -> list[Path]:
    """Write the command-line contract's files into ``out``. Files go to a temporary folder inside
    ``out`` first and are moved in only when every one was written, so a failure leaves ``out`` as
    it was (apart from files of the same names replaced by a previous complete run)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".deepsim-", dir=out))
    try:
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
        (tmp / "summary.json").write_text(json.dumps(result.summary.to_dict(), indent=2) + "\n")
        names.append("summary.json")
        if figure and moving is not None and fixed is not None:
            try:
                save_overview(result, fixed, moving, tmp / "overview.png")
                names.append("overview.png")
            except ImportError:
                log.warning("matplotlib is not installed: overview.png not written")
        for name in names:
            os.replace(tmp / name, out / name)
        return [out / n for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_overview(
    result: RegistrationResult, fixed: Image, moving: Image, path: str | Path
) -> None:
    """PNG of fixed / moving / warped / deformed grid / heatmaps / Jacobian. Everything is resampled
    onto a display grid in the standard orientation (3D: the middle axial slice, anterior up,
    radiological left-right), whatever the files' orientation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .geometry import model_grid, resample, sample_on_grid

    display = model_grid(fixed.grid, float(fixed.grid.spacing.min()), multiple=1)
    middle = display.shape[0] // 2 if display.spatial_dims == 3 else None

    def view(image: Image, interpolator: str = "linear") -> np.ndarray:
        arr = resample(
            Image(image.array.astype(np.float32), image.grid), display, None, interpolator
        ).array
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
