"""Print the README's per-model table from the shipped models' held-out evaluations.

For each shipped model, each held-out set of its card (``NAME.heldout.json``, written by
``scripts/model_card.py``): mean Dice at identity, then Dice, endpoint error and runtime of the
network alone (``--io-steps 0``) and of the default (network + the engine's ``recommended``).

usage: python scripts/model_rows.py
"""

from __future__ import annotations

import json

from deepsim.api import catalogue


def _cells(mean: dict | None) -> list[str]:
    if mean is None:
        return ["–"]
    epe = mean.get("endpoint_error_mm")
    epe_text = f"{epe:.2f} mm" if epe is not None else "–"
    return [f"{mean['dice_after']:.3f} / {epe_text} / {mean['runtime_s']:.1f} s"]


def _describe(data: dict) -> str:
    if data.get("kind") == "synthetic":
        microscopy = data.get("synth", {}).get("microscopy_prob", 0) >= 1
        return "synthetic microscopy" if microscopy else "synthetic random shapes"
    return "+".join(data.get("names", [])) + f" {data.get('spatial_dims', 3)}D, semi-synthetic"


def main() -> None:
    rows = []
    models = sorted(catalogue().items(), key=lambda item: (not item[1].default, item[0]))
    for name, entry in models:
        path = entry.path.with_suffix(".heldout.json")
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        for rep in (report, *report.get("more", {}).values()):
            what = _describe(rep.get("data", {}))
            rows.append(
                [name, f"{what} ({rep['pairs']} pairs)", f"{rep['mean']['dice_identity']:.3f}"]
                + _cells(rep.get("network_only"))
                + _cells(rep["mean"])
            )
    head = ["model", "held-out pairs", "Dice identity", "network only: Dice / EPE / time"]
    head += ["default: Dice / EPE / time"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
