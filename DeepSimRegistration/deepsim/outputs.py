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
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
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


def _middle_slice(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 2 else array[array.shape[0] // 2]


def save_overview(
    result: RegistrationResult, fixed: Image, moving: Image, path: str | Path
) -> None:
    """PNG of fixed / moving (on the fixed grid) / warped / deformed grid / heatmaps / Jacobian,
    through the middle slice along the first tensor axis in 3D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .geometry import resample

    moving_on_fixed = resample(moving, fixed.grid).array
    panels = [
        ("fixed", _middle_slice(fixed.array)),
        ("moving (unregistered)", _middle_slice(moving_on_fixed)),
        (
            "warped moving",
            _middle_slice(result.warped.array) if result.warped is not None else None,
        ),
    ]
    heat = [(k, v) for k, v in sorted(result.heatmaps.items())]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    axes = axes.ravel()
    for ax, (title, img) in zip(axes[:3], panels):
        if img is not None:
            ax.imshow(img, cmap="gray", origin="lower")
        ax.set_title(title)
    _draw_grid(axes[3], result, fixed)
    for ax, (key, image) in zip(axes[4:7], [h for h in heat if h[0].endswith("after")] + heat[:1]):
        im = ax.imshow(_middle_slice(image.array), cmap="inferno", vmin=0, vmax=1, origin="lower")
        ax.set_title(f"similarity {key.replace('_', ' ')}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    im = axes[7].imshow(
        _middle_slice(result.jacobian.array), cmap="RdBu_r", vmin=0, vmax=2, origin="lower"
    )
    axes[7].set_title(f"Jacobian (folding {result.summary.get('folding_percent', 0):.2f} %)")
    fig.colorbar(im, ax=axes[7], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _draw_grid(ax, result: RegistrationResult, fixed: Image, lines: int = 24) -> None:
    """Deformed grid lines: fixed voxel positions moved by the in-slice displacement (voxels)."""
    disp = (
        result.displacement
        if fixed.grid.spatial_dims == 2
        else result.displacement[fixed.array.shape[0] // 2]
    )
    d = fixed.grid.spatial_dims
    inv = np.linalg.inv(fixed.grid.linear)
    vox = disp @ inv.T  # displacement in fixed voxel steps, tensor order
    rows, cols = vox.shape[0], vox.shape[1]
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pr, pc = r + vox[..., d - 2], c + vox[..., d - 1]
    ax.imshow(_middle_slice(fixed.array), cmap="gray", origin="lower", alpha=0.4)
    step = max(1, min(rows, cols) // lines)
    for i in range(0, rows, step):
        ax.plot(pc[i], pr[i], color="tab:orange", lw=0.6)
    for j in range(0, cols, step):
        ax.plot(pc[:, j], pr[:, j], color="tab:orange", lw=0.6)
    ax.set_xlim(0, cols - 1)
    ax.set_ylim(0, rows - 1)
    ax.set_title("deformation grid")
