"""Shared helpers of the benchmark scripts: result files, environment record, seeding, tables.

Nothing here is imported by the library; the scripts in ``benchmarks/`` import it as a sibling
module (``python benchmarks/<script>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

__all__ = [
    "ROOT",
    "RESULTS",
    "FIGURES",
    "environment",
    "write_json",
    "read_json",
    "md_table",
    "fmt",
    "summary_stats",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_label(env: dict) -> dict:
    """Which machine and run a result was measured in: CPU, date and commit."""
    return {k: env.get(k) for k in ("host_cpu", "date", "git_commit")}


def environment() -> dict:
    """Where and when a result was produced (so a table can say which machine gave it)."""
    import torch

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host_cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for module in ("ants", "itk", "SimpleITK", "scipy"):
        try:
            mod = __import__(module)
            version = getattr(mod, "__version__", None)
            if module == "itk" and version is None:
                version = mod.Version.GetITKVersion()
            env[module] = str(version)
        except Exception:  # noqa: BLE001 - an optional tool that is missing or broken
            env[module] = None
    return env


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_default) + "\n")
    os.replace(tmp, path)


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(value, digits: int = 3) -> str:
    """A number for a table; NaN and None become an en dash."""
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f}"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_stats(values) -> dict:
    """Mean, std, median, quartiles and deciles of finite values (n counts them)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    q = np.percentile(v, [10, 25, 50, 75, 90])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "p10": float(q[0]),
        "q1": float(q[1]),
        "median": float(q[2]),
        "q3": float(q[3]),
        "p90": float(q[4]),
    }


# display names of the methods in tables and figures
METHOD_NAMES = {
    "identity": "no registration",
    "mse": "MSE",
    "ncc": "NCC",
    "ncc_sup": "NCC_sup",
    "deepsim_ae": "DeepSim_ae",
    "deepsim_seg": "DeepSim_seg",
    "vgg": "VGG",
    "deepsim": "DeepSim recommended",
    "deepsim_fast": "DeepSim fast",
    "deepsim_best": "DeepSim best",
    "deepsim_net": "DeepSim network only",
    "deepsim_affine": "our affine only",
    "deepsim_io20": "DeepSim + IO 20",
    "ants_syn": "ANTs SyN (antspyx default)",
    "ants_synquick_s": "ANTs SyNQuick[s]",
    "ants_syn_s": "ANTs SyN[s]",
    "ants_syncc": "ANTs SyNCC",
    "elastix": "elastix (default maps)",
    "elastix_brain": "elastix (brain B-spline)",
    "convexadam": "ConvexAdam",
}
