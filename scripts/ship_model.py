"""Copy a trained model file into the shipped models, recording its training log and refreshing
its ``info`` (description, defaults, card) from ``configs/NAME.json``.

usage: python scripts/ship_model.py runs/NAME/registration/model.pt DeepSimRegistration/Resources/Models/NAME.pt
"""

import json
import sys
from pathlib import Path

from deepsim.modelio import load_model, save_model


def main(src: str, dst: str) -> None:
    model = load_model(src)
    config = dict(model.config)
    source = Path(__file__).resolve().parent.parent / "configs" / f"{Path(dst).stem}.json"
    if source.is_file():
        config.setdefault("info", {}).update(json.loads(source.read_text()).get("info", {}))
    log = Path(src).with_name("log.jsonl")
    if log.exists():
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        config.setdefault("info", {})["training_log"] = lines
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_model(dst, model.networks, config)
    print(f"shipped {src} -> {dst} ({Path(dst).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
