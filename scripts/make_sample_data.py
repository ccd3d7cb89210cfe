"""Write the DeepSim sample pair into ``DeepSimRegistration/Resources/SampleData/`` (committed, a few hundred KB).

Two synthetic T1-like head phantoms (scalp, skull, CSF, folded grey matter, white matter, deep
nuclei, ventricles) on an 80 x 96 x 80 grid of 2 mm voxels, stored as compressed NRRD. The moving
phantom is the analytic phantom seen through a known mapping ``S(y) = R^T (y - t) + u(y)``: a
small rigid misalignment (4 degrees about S, t = (3, -4, 2) mm LPS) plus a smooth displacement
``u`` (max ~4 mm), with a slightly different contrast, bias field and noise. Because the phantom
is analytic, it is evaluated at the mapped points exactly (no interpolation).

Also writes ``sample_data.json`` with SHA256 checksums (read by the Slicer module to register the
pair with the Sample Data module) and a thumbnail. Run: ``.venv/bin/python scripts/make_sample_data.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "DeepSimRegistration" / "Resources" / "SampleData"
SHAPE = (80, 96, 80)  # tensor order (z, y, x) = (S, A/P, L/R): SimpleITK size (80, 96, 80)
SPACING = 2.0


def smooth(shape, sigma, rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma)
    return n / np.abs(n).max()


def phantom(p: np.ndarray, contrast: dict, fold: np.ndarray | None = None) -> np.ndarray:
    """Intensity at LPS points ``p`` (..., 3) in mm relative to the head centre."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r = np.sqrt((x / 68) ** 2 + (y / 84) ** 2 + (z / 66) ** 2)
    # cortical folding: the GM/WM boundary radius varies with angle
    theta = np.arctan2(y, x)
    phi = np.arctan2(z, np.hypot(x, y))
    wm_r = 0.70 + 0.09 * np.sin(11 * theta) * np.cos(9 * phi) + 0.03 * np.sin(17 * phi + 3 * theta)
    out = np.zeros(p.shape[:-1], np.float32)
    out[r < 1.0] = contrast["scalp"]
    out[r < 0.955] = contrast["skull"]
    out[r < 0.91] = contrast["csf"]
    out[r < 0.88] = contrast["gm"]
    out[r < wm_r] = contrast["wm"]
    for cx in (-16.0, 16.0):  # deep nuclei
        out[((x - cx) / 9) ** 2 + ((y + 2) / 13) ** 2 + ((z + 2) / 10) ** 2 < 1] = contrast[
            "nuclei"
        ]
    for cx in (-6.0, 6.0):  # lateral ventricles, a crescent each
        v = ((x - cx) / 4.5) ** 2 + ((y - 4) / 24) ** 2 + (
            (z - 10 + 0.004 * (y - 4) ** 2) / 7
        ) ** 2 < 1
        out[v] = contrast["csf"]
    out[(x / 2.5) ** 2 + ((y - 30) / 12) ** 2 + ((z + 14) / 5) ** 2 < 1] = contrast[
        "csf"
    ]  # 4th-ish
    return out


def grid_points() -> tuple[np.ndarray, np.ndarray]:
    """LPS points (z, y, x, 3) relative to the centre, and the image origin (x, y, z)."""
    axes = [(np.arange(n) - (n - 1) / 2) * SPACING for n in SHAPE]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([x, y, z], -1)
    origin = tuple(float(-(n - 1) / 2 * SPACING) for n in SHAPE[::-1])
    return pts, origin


def make_pair(seed: int = 7):
    rng = np.random.default_rng(seed)
    pts, origin = grid_points()
    t1 = {"scalp": 70, "skull": 12, "csf": 22, "gm": 62, "wm": 104, "nuclei": 80}
    t1b = {"scalp": 64, "skull": 15, "csf": 26, "gm": 58, "wm": 96, "nuclei": 74}
    bias_f = 1 + 0.06 * smooth(SHAPE, 18, rng)
    bias_m = 1 + 0.06 * smooth(SHAPE, 18, rng)
    fixed = phantom(pts, t1) * bias_f + rng.normal(0, 1.5, SHAPE)

    u = np.stack([4.0 * smooth(SHAPE, 10, rng) for _ in range(3)], -1)
    angle = np.deg2rad(4.0)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    shift = np.array([3.0, -4.0, 2.0])
    # moving(y) = phantom(S(y)): registering moving to fixed recovers approximately S^-1
    s_pts = (pts - shift) @ rot + u
    moving = phantom(s_pts, t1b) * bias_m + rng.normal(0, 1.5, SHAPE)
    info = {
        "moving_from_fixed": "moving(y) = phantom(R^T (y - t) + u(y)) with R a 4 degree rotation about S, "
        "t = (3, -4, 2) mm LPS and u a smooth field of max 4 mm",
        "max_displacement_mm": float(np.abs(u).max()),
    }
    return fixed.astype(np.int16), moving.astype(np.int16), origin, info


def write(array: np.ndarray, origin, path: Path) -> str:
    img = sitk.GetImageFromArray(np.clip(array, 0, None).astype(np.int16))
    img.SetSpacing((SPACING,) * 3)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path), useCompression=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def thumbnail(fixed: np.ndarray, moving: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(2.56, 1.28), dpi=100)
    for ax, vol in zip(axes, (fixed, moving)):
        ax.imshow(vol[SHAPE[0] // 2 + 6][::-1, ::-1], cmap="gray", vmin=0, vmax=120)
        ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fixed, moving, origin, info = make_pair()
    files = []
    for name, node, arr in (
        ("DeepSimPhantomFixed.nrrd", "DeepSimPhantomFixed", fixed),
        ("DeepSimPhantomMoving.nrrd", "DeepSimPhantomMoving", moving),
    ):
        files.append(
            {"fileName": name, "nodeName": node, "sha256": write(arr, origin, args.out / name)}
        )
    thumbnail(fixed, moving, args.out / "DeepSimPhantomPair.png")
    spec = {
        "category": "DeepSim Registration",
        "samples": [
            {
                "sampleName": "DeepSimPhantomPair",
                "thumbnail": "DeepSimPhantomPair.png",
                "description": "Synthetic T1-like head phantoms, 80x96x80 voxels of 2 mm; the moving one "
                "is deformed smoothly and misaligned rigidly (made by scripts/make_sample_data.py).",
                "files": files,
                "info": info,
            }
        ],
    }
    (args.out / "sample_data.json").write_text(json.dumps(spec, indent=2) + "\n")
    for f in files:
        print(
            f"{f['fileName']}: {(args.out / f['fileName']).stat().st_size / 1024:.0f} KB  sha256 {f['sha256']}"
        )


if __name__ == "__main__":
    main()
