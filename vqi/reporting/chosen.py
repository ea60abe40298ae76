"""The method Table I chose: `<paths.tables_dir>/chosen_method.json`, written by stage=report and
read by the stages that explain with it (augment, budget)."""
from __future__ import annotations

import json
from pathlib import Path

CHOSEN = "chosen_method.json"


def chosen_method(tables_dir: Path | str, method: str | None = None) -> str:
    """`method` when given (the config's `augment.method`), else the method Table I chose."""
    if method:
        return str(method)
    path = Path(tables_dir) / CHOSEN
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `stage=report` (Table I) first (it chooses no "
                                "method when every method explained 0 units: train longer), or set augment.method=<name>")
    return str(json.loads(path.read_text())["method"])
