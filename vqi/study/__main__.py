"""The known-truth studies (docs/study.md). Stopping one (SIGTERM, Ctrl-C) stops its running
stage too; rerunning the same command resumes.

    python -m vqi.study arms --protocol conf/study/development.yaml      # make study
    python -m vqi.study budget --seeds 1 2 3 -- experiment=demo          # make budget
    python -m vqi.study design --seeds 1 2 3 -- experiment=demo          # settings from dev seeds
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqi import PROJECT_ROOT
from vqi.study.arm_study import load_protocol, run_arm_study
from vqi.study.budget_study import finished_results, run_budget_study
from vqi.study.design import choose_settings

OUTPUTS = PROJECT_ROOT / "outputs"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vqi.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    arms = sub.add_parser("arms", help="every arm of a protocol on its seeds, retrained -> <name>.{md,csv,tex}")
    arms.add_argument("--protocol", type=Path, required=True, help="a protocol yaml (conf/study/*.yaml)")
    arms.add_argument("--output-dir", type=Path, default=None, help="default: outputs/study-<protocol name>")
    arms.add_argument("--tables-dir", type=Path, default=OUTPUTS / "tables")
    arms.add_argument("--name", default=None, help="the table's file stem (default: study_<protocol name>)")
    budget = sub.add_parser("budget", help="budget curves per seed (no retraining) -> review_budget.{md,csv,tex,png}")
    budget.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    budget.add_argument("--output-dir", type=Path, default=OUTPUTS / "study-budget")
    budget.add_argument("--tables-dir", type=Path, default=OUTPUTS / "tables")
    budget.add_argument("--figures-dir", type=Path, default=OUTPUTS / "figures")
    budget.add_argument("--name", default="review_budget", help="the table's and figure's file stem")
    budget.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    design = sub.add_parser("design", help="a protocol's settings chosen on development seeds' budget curves")
    design.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    design.add_argument("--output-dir", type=Path, default=OUTPUTS / "study-budget")
    design.add_argument("overrides", nargs="*", help="the budget study's Hydra overrides")
    args = parser.parse_args()
    if args.command == "design":
        settings, why = choose_settings(finished_results(args.seeds, args.overrides, args.output_dir.resolve()))
        print("\n".join(why))
        print("settings:", json.dumps(settings))
        return
    if args.command == "arms":
        stem = args.protocol.stem
        output_dir = (args.output_dir or OUTPUTS / f"study-{stem}").resolve()
        run_arm_study(load_protocol(args.protocol), output_dir, args.tables_dir, args.name or f"study_{stem}")
        return
    results = run_budget_study(args.seeds, args.overrides, args.output_dir.resolve(), args.tables_dir,
                               args.figures_dir, args.name)
    print(f"review budget: {len(results)} seeds")
    print((args.tables_dir / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
