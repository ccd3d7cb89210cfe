"""Copy a trained model file into the shipped models, recording its training log and refreshing
its ``info`` (description, defaults, card) and its model grid's size multiple
(``preprocessing.multiple``, a deploy setting: the weights do not depend on it) from
``configs/NAME.json``; write its catalogue entry ``NAME.json`` beside it (read without torch by
``deepsim.api.catalogue``).

usage: python scripts/ship_model.py runs/NAME/registration/model.pt DeepSimRegistration/deepsim/models/NAME.pt
"""

import json
import sys
from pathlib import Path

from deepsim.api import catalogue_entry
from deepsim.modelio import load_model, read_model_file, save_model


def main(src: str, dst: str) -> None:
    model = load_model(src)
    config = dict(model.config)
    source = Path(__file__).resolve().parent.parent / "configs" / f"{Path(dst).stem}.json"
    if source.is_file():
        own = json.loads(source.read_text())
        config.setdefault("info", {}).update(own.get("info", {}))
        if "multiple" in own.get("preprocessing", {}):
            config.setdefault("preprocessing", {})["multiple"] = own["preprocessing"]["multiple"]
    log = Path(src).with_name("log.jsonl")
    if log.exists():
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        config.setdefault("info", {})["training_log"] = lines
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_model(dst, model.networks, config)
    write_catalogue_entry(dst)
    print(f"shipped {src} -> {dst} ({Path(dst).stat().st_size / 1e6:.2f} MB)")


def write_catalogue_entry(model_file: str | Path) -> None:
    """``NAME.json`` beside ``NAME.pt``: what the catalogue needs, from the file's config."""
    config, _ = read_model_file(model_file)
    entry = catalogue_entry(config)
    Path(model_file).with_suffix(".json").write_text(json.dumps(entry, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--catalogue":  # refresh the catalogue entries of shipped model files
        for path in sys.argv[2:]:
            write_catalogue_entry(path)
    else:
        main(*sys.argv[1:3])
