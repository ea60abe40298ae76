"""The MLflow UI on this checkout's tracking store, with the address of each experiment's runs.

    python scripts/mlflow_ui.py [--store outputs/mlflow.db] [--port 5000] [--host 127.0.0.1]

`make ui` runs it. It prints one address per experiment (vqi-demo, vqi-paper, ...) that opens
the experiment's runs table in MLflow's "Model training" view, then replaces itself with
`mlflow ui` on the same store (Ctrl-C stops it).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vqi import PROJECT_ROOT
from vqi.tracking import ui_links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=PROJECT_ROOT / "outputs" / "mlflow.db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    store = args.store.resolve()
    if not store.is_file():
        raise SystemExit(f"{store} does not exist: run a stage first (make demo)")
    uri = f"sqlite:///{store}"
    base = f"http://{args.host}:{args.port}"
    links = ui_links(uri, base)
    print(f"MLflow UI on {store}: {base}")
    for name, link in links.items():
        print(f"  {name}: {link}")
    if not links:
        print("  (no experiment has runs yet)")
    print("Ctrl-C stops it.", flush=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow), [str(mlflow), "ui", "--backend-store-uri", uri, "--host", args.host,
                           "--port", str(args.port)])


if __name__ == "__main__":
    main()
