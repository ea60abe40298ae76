"""The known-truth study: does explanation-guided annotation enhancement repair labels and
improve the model? (docs/study.md)

For every seed (and every annotation-noise width factor of a dose-response), on generated data
whose true masks are known: the baseline once (`stage=all until=report`: prepare, train, test,
Table I, the chosen method), then each arm on it:

  original    the baseline itself (Δ = 0 by definition)
  cam         the chosen CAM's proposals, threshold policy (the demo's)
  cam_oracle  the chosen CAM's proposals, decided by the oracle expert (augment.policy=oracle)
  dilate      every thin instance enlarged by k, accepted (no explanation: the control)
  random_cam  Random-CAM's proposals, threshold policy (proposals from noise)
  truth       trained on the true masks (the upper bound)

Each arm is `stage=augment` + `stage=retrain` into its own split, review folder and checkpoint
folder. Every (seed, width factor, arm) result is appended to `<output-dir>/results.jsonl` as it
finishes; a rerun skips finished ones (and the stages reuse finished work), so a killed study
resumes. The table goes to `<tables-dir>/<table-name>.{md,csv,tex}` (default `outputs/tables/study.*`).

    python scripts/study.py --seeds 1 2 3 4 5
    python scripts/study.py --seeds 1 2 3 --arms original cam dilate --width-factors 1.0 0.7 0.5 0.3
    python scripts/study.py --seeds 1 2 -- train.epochs=10          # Hydra overrides for every run
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from vqi import PROJECT_ROOT
from vqi.config import compose_config
from vqi.study.tables import ARMS, paired, seed_values, study_table
from vqi.reporting.tables import write_table

CAM_ARMS = {"cam", "cam_oracle"}
ARM_OVERRIDES = {
    "cam": ["augment.proposer=cam", "augment.policy=threshold"],
    "cam_oracle": ["augment.proposer=cam", "augment.policy=oracle"],
    "dilate": ["augment.proposer=dilate", "augment.policy=accept_all"],
    "random_cam": ["augment.proposer=random_cam", "augment.policy=threshold"],
}


def vqi_run(stage: str, overrides: list[str], log: Path) -> None:
    """`python -m vqi.run stage=<stage> ...`, its output appended to `log`; raises on failure."""
    command = [sys.executable, "-m", "vqi.run", f"stage={stage}", "train.progress=false", "xai.progress=false",
               *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        proc = subprocess.run(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[3:5])} failed (exit {proc.returncode}); see {log}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_metrics(path: Path) -> dict[str, float]:
    return {k: v for k, v in read_json(path)["metrics"].items() if v is not None}


def run_arm(arm: str, folder: Path, common: list[str], processed: Path, experiment: str) -> dict[str, float]:
    """Run one arm on a finished baseline (prepared in `processed`); return its metrics (fractions)."""
    log = folder / "logs" / f"{arm}.log"
    if arm == "original":
        metrics = test_metrics(folder / "test" / experiment / "baseline" / "test" / "metrics.json")
        summary = read_json(processed / "summary.json")
        metrics["label_iou_cable"] = summary.get("label_iou", {}).get("train", {}).get("iou_cable")
        return metrics
    place = [f"retrain.checkpoint_dir={folder / 'checkpoints' / arm}", f"test.output_dir={folder / 'test' / arm}"]
    if arm == "truth":
        vqi_run("retrain", [*common, *place, "retrain.split=train", "train.labels=truth"], log)
        return test_metrics(folder / "test" / arm / "metrics.json")
    split = f"train_{arm}"
    vqi_run("augment", [*common, *ARM_OVERRIDES[arm], f"augment.output_split={split}",
                        f"augment.review_dir={folder / 'review' / arm}"], log)
    vqi_run("retrain", [*common, *place, f"retrain.split={split}"], log)
    metrics = test_metrics(folder / "test" / arm / "metrics.json")
    summary = read_json(processed / "annotations" / f"{split}_summary.json")
    metrics["label_iou_cable"] = summary.get("label_iou", {}).get("after", {}).get("iou_cable")
    metrics.update(summary.get("proposal_quality", {}))
    metrics.update({f"decisions/{k}": summary[k] for k in ("accepted", "rejected", "pending")})
    return metrics


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def check_settings(folder: Path, settings: dict) -> None:
    """A study folder holds one setting: refuse to mix results made with other overrides."""
    path = folder / "study.json"
    if path.is_file():
        old = read_json(path)
        if old != settings:
            raise SystemExit(f"{folder} holds a study made with other settings ({old['overrides']}); "
                             "choose another --output-dir")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def comparisons(records: list[dict], factor: float) -> list[str]:
    """Paired cam − control differences on cable IoU against truth: the study's question."""
    lines = []
    by_arm = {arm: seed_values([r for r in records if r["width_factor"] == factor and r["arm"] == arm],
                           "truth/iou_cable") for arm in ARMS}
    for arm in ("cam", "cam_oracle"):
        for control in ("dilate", "random_cam", "original"):
            result = paired(by_arm[arm], by_arm[control])
            if result is not None and result.n > 1:
                verdict = "CI excludes 0" if result.excludes_zero else "CI includes 0"
                lines.append(f"width factor {factor:g}: {arm} − {control}, cable IoU vs truth: "
                             f"{result.cell()} points over {result.n} seeds ({verdict}).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--width-factors", type=float, nargs="+", default=None,
                        help="dose-response: noise.cable_width_factor values (default: the config's)")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "outputs" / "study")
    parser.add_argument("--tables-dir", type=Path, default=PROJECT_ROOT / "outputs" / "tables")
    parser.add_argument("--table-name", default="study", help="the table's file stem in --tables-dir")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    out = args.output_dir.resolve()
    check_settings(out, {"overrides": args.overrides})
    base = compose_config(["stage=prepare", *args.overrides])
    factors = args.width_factors or [float(base.noise.cable_width_factor)]
    arms = [a for a in ARMS if a in args.arms]
    results_file = out / "results.jsonl"
    records = load_results(results_file)
    done = {(r["seed"], r["width_factor"], r["arm"]) for r in records}
    started = time.time()
    for factor in factors:
        for seed in args.seeds:
            todo = [a for a in arms if (seed, factor, a) not in done]
            if not todo:
                continue
            folder = out / f"seed{seed}-w{factor:g}"
            common = [f"seed={seed}", f"paths.output_dir={folder}", f"paths.data_dir={folder / 'data'}",
                      f"noise.cable_width_factor={factor}", *args.overrides]
            tic = time.time()
            until = "report" if CAM_ARMS & set(todo) else "test"
            print(f"[{time.time() - started:6.0f}s] seed {seed}, width factor {factor:g}: baseline (until={until})",
                  flush=True)
            vqi_run("all", [*common, f"until={until}"], folder / "logs" / "baseline.log")
            baseline_seconds = time.time() - tic
            seed_cfg = compose_config(["stage=prepare", *common])   # once per seed: its folders and name
            processed, experiment = Path(seed_cfg.data.processed_dir), str(seed_cfg.experiment_name)
            for arm in todo:
                tic = time.time()
                print(f"[{time.time() - started:6.0f}s] seed {seed}, width factor {factor:g}: arm {arm}", flush=True)
                metrics = run_arm(arm, folder, common, processed, experiment)
                record = {"seed": seed, "width_factor": factor, "arm": arm, "metrics": metrics,
                          "seconds": round(time.time() - tic + (baseline_seconds if arm == "original" else 0), 1)}
                with open(results_file, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                records.append(record)
    notes = [f"Seeds {sorted({r['seed'] for r in records})}; overrides: {' '.join(args.overrides) or '(none)'}; "
             "IoU in % on each seed's generated test split, against the true masks and against the noisy "
             "annotation (the paper's protocol).",
             "Δ: paired difference to the original model of the same seed, percentage points: "
             "mean ± sample std [95% t interval].",
             "enlarge / perplexed P and R: precision and recall of the accepted changes against the truth (%).",
             f"Total run time of the finished records: {sum(r['seconds'] for r in records) / 60:.1f} min."]
    for factor in factors:
        notes += comparisons(records, factor)
    table, _ = study_table(records, "Known-truth study: annotation enhancement arms against the original", notes)
    paths = write_table(table, args.tables_dir, args.table_name)
    print(table.markdown())
    print("written:", ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
