"""Every figure of the benchmarks: drawn from stored results (or, for the noise grids, from the
fields a run computed), written under docs/figures/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import METHOD_NAMES as LABELS


def boxplot(per_pair: dict, sets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(per_pair)
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.2), squeeze=False)
    for ax, test_set in zip(axes[0], sets):
        data = [per_pair[m][test_set] for m in methods]
        ax.boxplot(
            data,
            whis=(10, 90),
            showfliers=True,
            medianprops={"color": "black"},
            flierprops={"marker": ".", "markersize": 4},
        )
        ax.set_xticks(range(1, len(methods) + 1))
        ax.set_xticklabels([LABELS[m] for m in methods], rotation=35, ha="right")
        ax.set_title(f"{test_set} (n={len(data[0])})")
        ax.set_ylabel("mean foreground Dice")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        title + "\nbox: quartiles and median; whiskers: 10th/90th percentiles; dots: outliers"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_figure(rows: dict, region, path: Path, title: str):
    """Deformation grids ``x + u(x)`` (every 3rd line, red) inside ``region``; one row per noise
    level, one column per method; background: the first panel's image, then the clean moving
    image warped by each method's field (the noise would hide the grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(p) for p in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax_row, (row_name, panels) in zip(axes, rows.items()):
        for ax, (name, image, disp) in zip(ax_row, panels):
            sub = image[region]
            u = disp[:, region[0], region[1]]
            ax.imshow(sub, cmap="gray", vmin=0, vmax=1)
            rr, cc = np.meshgrid(np.arange(sub.shape[0]), np.arange(sub.shape[1]), indexing="ij")
            y, x = rr + u[0], cc + u[1]
            for i in range(0, y.shape[0], 3):
                ax.plot(x[i, :], y[i, :], color="red", lw=0.7)
            for j in range(0, y.shape[1], 3):
                ax.plot(x[:, j], y[:, j], color="red", lw=0.7)
            ax.set_title(f"{name}\n{row_name}", fontsize=8)
            ax.set_xlim(-0.5, sub.shape[1] - 0.5)
            ax.set_ylim(sub.shape[0] - 0.5, -0.5)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
