"""The DeepSim sample pair, described by ``sample_data.json`` (written by
``scripts/make_sample_data.py``) for the Sample Data module: local ``file://`` URIs + SHA256."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SAMPLE_DATA_JSON", "findSampleDataFolder", "sampleDataSources"]

SAMPLE_DATA_JSON = "sample_data.json"


def findSampleDataFolder(moduleDir: str | Path) -> Path | None:
    """The module's ``Resources/SampleData`` when it holds ``sample_data.json``, else None."""
    folder = Path(moduleDir) / "Resources" / "SampleData"
    return folder if (folder / SAMPLE_DATA_JSON).is_file() else None


def sampleDataSources(folder: str | Path) -> list[dict]:
    """Keyword arguments for ``SampleDataLogic.registerCustomSampleDataSource``, one dict per
    sample, with ``file://`` URIs and ``SHA256:`` checksums; files that are missing are skipped."""
    folder = Path(folder)
    spec = json.loads((folder / SAMPLE_DATA_JSON).read_text())
    out = []
    for sample in spec["samples"]:
        files = [folder / f["fileName"] for f in sample["files"]]
        if not all(p.is_file() for p in files):
            continue
        out.append(
            {
                "category": spec.get("category", "DeepSim Registration"),
                "sampleName": sample["sampleName"],
                "thumbnailFileName": str(folder / sample["thumbnail"])
                if sample.get("thumbnail")
                else None,
                "uris": [p.resolve().as_uri() for p in files],
                "fileNames": [p.name for p in files],
                "nodeNames": [f["nodeName"] for f in sample["files"]],
                "checksums": [f"SHA256:{f['sha256']}" for f in sample["files"]],
            }
        )
    return out
