"""stage=report: Table I from the tracked evaluate runs of one checkpoint, and the chosen method;
Table II (original vs enhanced test IoU) once a retrain run exists.

Config keys read: `xai.checkpoint`, `xai_methods` (row order; other evaluated methods follow),
`paths.tables_dir`. Takes the latest FINISHED `evaluate` run per method tagged with the
checkpoint's hash (in this MLflow experiment), writes `table1.md/.csv/.tex` and
`chosen_method.json` (read by the augment stage) to `paths.tables_dir`, logs them.
Table II takes the latest FINISHED `test` run of `test.checkpoint` and `retrain` run of the
enhanced checkpoint (`retrain.checkpoint_dir`) on `test.split`, and writes `table2.md/.csv/.tex`.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vqi.reporting.table1 import MethodResult, build_table1, choose_method, label
from vqi.reporting.table2 import COLUMNS, ModelResult, build_table2
from vqi.stages.retrain import enhanced_config
from vqi.reporting.tables import write_table
from vqi.utils.atomic import write_json
from vqi.xai.maps import file_hash

log = logging.getLogger(__name__)

CHOSEN = "chosen_method.json"


def run_name(cfg: DictConfig) -> str:
    return f"report-{cfg.experiment_name}"


def evaluate_runs(experiment_id: str, checkpoint_hash: str) -> dict[str, MethodResult]:
    """The latest finished evaluate run per method for a checkpoint hash."""
    runs = MlflowClient().search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=5000,
        filter_string=f"tags.stage = 'evaluate' and tags.checkpoint_hash = '{checkpoint_hash}' "
                      "and attributes.status = 'FINISHED'")
    latest: dict[str, MethodResult] = {}
    for run in runs:
        method = run.data.tags.get("xai_method")
        if method and method not in latest:
            latest[method] = MethodResult(method, dict(run.data.metrics), run.data.tags.get("device", "?"),
                                          run.info.run_id)
    return latest


def run(cfg: DictConfig) -> dict[str, float]:
    checkpoint = Path(cfg.xai.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"xai.checkpoint {checkpoint} does not exist (run stage=train first)")
    checkpoint_hash = file_hash(checkpoint)
    found = evaluate_runs(mlflow.active_run().info.experiment_id, checkpoint_hash)
    if not found:
        raise ValueError(f"no finished evaluate run for checkpoint {checkpoint} (hash {checkpoint_hash}); "
                         "run stage=explain,evaluate for each method first")
    wanted = [m for m in cfg.xai_methods if m in found]
    results = [found[m] for m in wanted] + [found[m] for m in sorted(found) if m not in wanted]
    missing = [m for m in cfg.xai_methods if m not in found]
    notes = [f"Checkpoint {checkpoint} (sha256 {checkpoint_hash}); units = (image, foreground class) "
             "pairs with ground truth and target pixels (docs/metrics.md)."]
    skipped = sorted({k for r in results for k in r.metrics if k.startswith("skipped/")})
    if skipped:
        notes.append("Skipped units: " + ", ".join(
            f"{k.split('/', 1)[1]} {int(results[0].metrics.get(k, 0))}" for k in skipped) + f" ({label(results[0].method)}).")
    if missing:
        notes.append(f"Not evaluated for this checkpoint: {', '.join(missing)}.")
    table = build_table1(results, caption="Table I: plausibility and faithfulness of CAM methods", notes=notes)
    winner, wins = choose_method(table, results)
    table.notes.append(f"Chosen method: {label(winner)} (wins {wins[winner]} column(s); ties: best mean rank, "
                       "then table order).")
    tables_dir = Path(cfg.paths.tables_dir)
    paths = write_table(table, tables_dir, "table1")
    write_json(tables_dir / CHOSEN, {"method": winner, "label": label(winner), "wins": wins,
                                     "checkpoint": str(checkpoint), "checkpoint_hash": checkpoint_hash,
                                     "runs": {r.method: r.run_id for r in results}})
    for path in [*paths, tables_dir / CHOSEN]:
        mlflow.log_artifact(str(path), artifact_path="tables")
    mlflow.set_tags({"chosen_method": winner, "checkpoint": str(checkpoint), "checkpoint_hash": checkpoint_hash})
    log.info("Table I (%d methods) -> %s; chosen method: %s\n%s", len(results), paths[0], winner,
             table.markdown())
    return {f"wins/{m}": float(n) for m, n in wins.items()} | table2(cfg, mlflow.active_run().info.experiment_id)


def latest_test_run(experiment_id: str, stage: str, checkpoint: str, split: str) -> ModelResult | None:
    runs = MlflowClient().search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
        filter_string=f"tags.stage = '{stage}' and tags.checkpoint = '{checkpoint}' "
                      f"and tags.split = '{split}' and attributes.status = 'FINISHED'")
    if not runs:
        return None
    return ModelResult("", dict(runs[0].data.metrics), runs[0].info.run_id, checkpoint)


def truth_row(result: ModelResult) -> ModelResult:
    """A model's IoU against the true masks (`truth/*` metrics of stage=test) as a row of its own."""
    metrics = {k[len("truth/"):]: v for k, v in result.metrics.items() if k.startswith("truth/")}
    return replace(result, metrics=metrics)


def table2(cfg: DictConfig, experiment_id: str) -> dict[str, float]:
    """Write Table II when both models were tested on the split; metrics: the IoU differences."""
    split = str(cfg.test.split)
    original = latest_test_run(experiment_id, "test", str(cfg.test.checkpoint), split)
    enhanced = latest_test_run(experiment_id, "retrain", str(enhanced_config(cfg).test.checkpoint), split)
    if original is None or enhanced is None:
        log.info("Table II not written yet: it needs a finished stage=test and stage=retrain on %s", split)
        return {}
    results = [replace(original, name="Original"), replace(enhanced, name="Enhanced")]
    table = build_table2(results, notes=[
        f"Split `{split}` (the original annotations, untouched by augmentation); Overall = mean IoU "
        "of the four foreground classes; `perplexed` counts as background."])
    paths = write_table(table, Path(cfg.paths.tables_dir), "table2")
    truth_results = [truth_row(r) for r in results]
    if all(r.metrics for r in truth_results):  # generated data: the same predictions against the truth
        truth_table = build_table2(truth_results, notes=[
            f"Split `{split}` scored against its true masks, which generated data knows (Table II above: "
            "against the annotated labels, the paper's protocol). Distractors count as background."],
            caption="Table II against truth: test IoU (%) of the original and enhanced models")
        paths += write_table(truth_table, Path(cfg.paths.tables_dir), "table2_truth")
        log.info("Table II against truth\n%s", truth_table.markdown())
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="tables")
    log.info("Table II -> %s\n%s", paths[0], table.markdown())
    return {f"delta/{c.key}": 100 * (enhanced.metrics[c.key] - original.metrics[c.key])
            for c in COLUMNS if c.key in enhanced.metrics and c.key in original.metrics}
