"""The devices torch sees, asked in a child process so torch never loads in Slicer's own."""

from __future__ import annotations

import json
import subprocess

from .runner import pythonExecutable

__all__ = ["PROBE", "probeDevices"]

PROBE = """
import json, torch
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(json.dumps({"torch": torch.__version__, "cuda": gpus}))
"""


def probeDevices(python: str | None = None, timeout: float = 120.0) -> list[tuple[str, str]]:
    """``(label, device)`` pairs for the panel: ``auto``, then the CUDA GPU by name when torch
    sees one (``deepsim`` runs on the first), then the CPU. Raises RuntimeError with torch's own
    message when torch does not import."""
    out = subprocess.run(
        [python or pythonExecutable(), "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        raise RuntimeError(
            "PyTorch does not load: " + (lines[-1] if lines else f"exit code {out.returncode}")
        )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    devices = [("auto", "auto")]
    if found["cuda"]:
        devices.append((f"GPU: {found['cuda'][0]}", "cuda"))
    devices.append(("CPU", "cpu"))
    return devices
