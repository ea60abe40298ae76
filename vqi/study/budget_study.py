"""`make budget`: per seed the baseline (prepare, train, test, Table I: `stage=all until=report`)
and `stage=budget`, then the table and figure over seeds. Resumable: a seed whose budget.json
exists is not rerun (the stages themselves reuse finished work), and a study folder holds one
setting (other overrides are refused)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from vqi.config import compose_config
from vqi.reporting.tables import write_table
from vqi.study.budget_table import budget_figure, budget_table
from vqi.study.runner import vqi_run
from vqi.utils.atomic import write_text


def check_settings(folder: Path, settings: dict) -> None:
    """A study folder holds one setting: refuse to mix results made with other overrides. The
    record is written atomically: parallel jobs of one study (a seed each) may start together."""
    path = folder / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            raise SystemExit(f"{folder} holds a study made with other settings ({old}); choose another --output-dir")
    else:
        write_text(path, json.dumps(settings, indent=2) + "\n")


def seed_result(folder: Path, common: list[str]) -> Path:
    """Where `stage=budget` writes this seed's budget.json."""
    return Path(compose_config(["stage=budget", *common]).budget.output_dir) / "budget.json"


def seed_folder_and_overrides(output_dir: Path, seed: int, overrides: list[str]) -> tuple[Path, list[str]]:
    folder = output_dir / f"seed{seed}"
    return folder, [f"seed={seed}", f"paths.output_dir={folder}", f"paths.data_dir={folder / 'data'}", *overrides]


def finished_results(seeds: list[int], overrides: list[str], output_dir: Path) -> dict[int, dict]:
    """The budget.json of every seed given; an unfinished seed is an error naming it."""
    results = {}
    for seed in seeds:
        path = seed_result(*seed_folder_and_overrides(output_dir, seed, overrides))
        if not path.is_file():
            raise SystemExit(f"seed {seed} has no budget curves yet ({path}): run the budget study first")
        results[seed] = json.loads(path.read_text())
    return results


def run_budget_study(seeds: list[int], overrides: list[str], output_dir: Path, tables_dir: Path,
                     figures_dir: Path, name: str = "review_budget") -> dict[int, dict]:
    check_settings(output_dir, {"kind": "budget", "overrides": overrides})
    results, started = {}, time.time()
    for seed in seeds:
        folder, common = seed_folder_and_overrides(output_dir, seed, overrides)
        result = seed_result(folder, common)
        if not result.is_file():
            print(f"[{time.time() - started:6.0f}s] seed {seed}: baseline and Table I", flush=True)
            vqi_run("all", [*common, "until=report"], folder / "logs" / "baseline.log")
            print(f"[{time.time() - started:6.0f}s] seed {seed}: budget curves", flush=True)
            vqi_run("budget", common, folder / "logs" / "budget.log")
        results[seed] = json.loads(result.read_text())
        write_outputs(results, overrides, tables_dir, figures_dir, name)   # the table grows seed by seed
    return results


def write_outputs(results: dict[int, dict], overrides: list[str], tables_dir: Path, figures_dir: Path,
                  name: str) -> list[Path]:
    first = next(iter(results.values()))
    notes = [f"Seeds {sorted(results)}; overrides: {' '.join(overrides) or '(none)'}; "
             f"{first['proposals']} proposals on the first seed ({first['kinds']}).",
             f"Training-split {first['class_name']} label IoU against the truth (%) after the oracle expert "
             "reviews the top B of the proposals in each ranker's order (careful expert: best k, label by "
             f"the truth; flip {first['flip']:g}); AUBC: area under that curve over B in [0, 1] (points).",
             "AUC: how well a ranker's scores put good proposals first (enlargement: ring at least half "
             "true cable; unlabelled: the careful expert gives it a label), mean over seeds."]
    table = budget_table(results, "Review under a budget: which ranker sends the expert to the right proposals", notes)
    paths = write_table(table, tables_dir, name)
    paths.append(budget_figure(results, figures_dir / f"{name}.png", f"Review budget, {len(results)} seeds"))
    return paths
