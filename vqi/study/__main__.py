"""`python -m vqi.study budget --seeds 1 2 3 -- <Hydra overrides>`: the review-budget study
(docs/study.md). Stopping it (SIGTERM, Ctrl-C) stops the running stage too; rerunning resumes."""
from __future__ import annotations

import argparse
from pathlib import Path

from vqi import PROJECT_ROOT
from vqi.study.budget_study import run_budget_study


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vqi.study", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    budget = sub.add_parser("budget", help="budget curves per seed (no retraining) -> review_budget.{md,csv,tex,png}")
    budget.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    budget.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "outputs" / "study-budget")
    budget.add_argument("--tables-dir", type=Path, default=PROJECT_ROOT / "outputs" / "tables")
    budget.add_argument("--figures-dir", type=Path, default=PROJECT_ROOT / "outputs" / "figures")
    budget.add_argument("--name", default="review_budget", help="the table's and figure's file stem")
    budget.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    results = run_budget_study(args.seeds, args.overrides, args.output_dir.resolve(), args.tables_dir,
                               args.figures_dir, args.name)
    print(f"review budget: {len(results)} seeds; table {args.tables_dir / args.name}.md")
    print((args.tables_dir / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
