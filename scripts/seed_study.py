"""Original vs Enhanced over several seeds: the whole pipeline once per seed, then mean ± std of
Table II's columns.

Each seed gets its own data and output folders (the seed also changes the generated dataset and
its split), so runs never share a checkpoint. Extra arguments are Hydra overrides passed to every
run, e.g. `python scripts/seed_study.py --seeds 1 2 3 -- augment.policy=accept_all`.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

from vqi import PROJECT_ROOT


def run_seed(seed: int, folder: Path, overrides: list[str]) -> dict[str, dict[str, float]]:
    """Run `stage=all` for one seed; return Table II as {model: {column: IoU %}}."""
    command = [sys.executable, "-m", "vqi.run", "stage=all", f"seed={seed}",
               f"paths.output_dir={folder}", f"paths.data_dir={folder / 'data'}", *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)
    with open(folder / "tables" / "table2.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["Model"]: {k: float(v) for k, v in row.items() if k not in ("Model", "best_in") and v not in ("", "–")}
            for row in rows}


def summarise(tables: dict[int, dict[str, dict[str, float]]]) -> str:
    columns = list(next(iter(tables.values()))["Original"])
    lines = [f"Original vs Enhanced over seeds {', '.join(map(str, tables))} (test IoU %, mean ± std)", "",
             "| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model in ("Original", "Enhanced", "Δ"):
        cells = []
        for column in columns:
            if model == "Δ":
                values = [t["Enhanced"][column] - t["Original"][column] for t in tables.values()]
            else:
                values = [t[model][column] for t in tables.values()]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (cable, Overall):"]
    lines += [f"- seed {s}: Original {t['Original']['cable']:.2f}, {t['Original']['Overall']:.3f}; "
              f"Enhanced {t['Enhanced']['cable']:.2f}, {t['Enhanced']['Overall']:.3f}"
              for s, t in tables.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "outputs" / "seed-study")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    tables = {seed: run_seed(seed, args.output_dir.resolve() / f"seed{seed}", args.overrides)
              for seed in args.seeds}
    report = summarise(tables)
    (args.output_dir / "seed_study.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
