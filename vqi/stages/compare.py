"""stage=compare: Table II (original vs enhanced test IoU) and the paper's Fig. 6, once a retrain run exists.

Config keys read: `test.{checkpoint, split, transform}`, `retrain.checkpoint_dir` (the enhanced
checkpoint, `vqi.config.enhanced_config`), `paths.tables_dir`, `report.figures_dir`, `device`,
`data.processed_dir`. Takes the latest FINISHED `test` run of `test.checkpoint` and `retrain` run of
the enhanced checkpoint on `test.split` (in this MLflow experiment), writes `table2.md/.csv/.tex`
(and `table2_truth.*` when those runs scored the true masks too) to `paths.tables_dir`, and
`<report.figures_dir>/original_vs_enhanced.png` from both checkpoints re-run on `test.split` (the test
stage keeps no per-image predictions to draw it from). Metrics: `delta/<column>`, the enhanced
model's IoU minus the original's, in points. Without both runs it writes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import mlflow
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vqi import tracking
from vqi.config import enhanced_config
from vqi.data.dataset import SegmentationDataset
from vqi.models.checkpoint import load_model
from vqi.reporting.examples import before_after_rows
from vqi.reporting.figures import save_before_after_figure, to_rgb
from vqi.reporting.table2 import COLUMNS, ModelResult, build_table2
from vqi.reporting.tables import write_table
from vqi.utils.device import resolve_device

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"compare-{cfg.experiment_name}"


def run(cfg: DictConfig) -> dict[str, float]:
    return table2(cfg, mlflow.active_run().info.experiment_id)


def latest_test_run(experiment_id: str, stage: str, checkpoint: str, split: str) -> ModelResult | None:
    runs = MlflowClient().search_runs(
        tracking.lineage(experiment_id), order_by=["attributes.start_time DESC"], max_results=1,
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
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="tables")
    checkpoints = [Path(str(cfg.test.checkpoint)), Path(str(enhanced_config(cfg).test.checkpoint))]
    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:  # Table II comes from the tracked runs; the figure needs the models themselves
        log.warning("no original-vs-enhanced figure: checkpoint(s) %s no longer exist", ", ".join(missing))
        figure = None
    else:
        figure = _before_after_figure(cfg, *checkpoints, split)
        mlflow.log_artifact(str(figure), artifact_path="figures")
    log.info("Table II -> %s; Overall IoU %.1f%% -> %.1f%%; figure: %s", paths[0],
             100 * original.metrics.get("iou_overall", float("nan")),
             100 * enhanced.metrics.get("iou_overall", float("nan")), figure.name if figure else "none")
    return {f"delta/{c.key}": 100 * (enhanced.metrics[c.key] - original.metrics[c.key])
            for c in COLUMNS if c.key in enhanced.metrics and c.key in original.metrics}


def _before_after_figure(cfg: DictConfig, original: Path, enhanced: Path, split: str) -> Path:
    """The paper's Fig. 6: image, annotation, original and enhanced predictions, on the images of
    `split` where the two models disagree most."""
    device = resolve_device(cfg.device)
    before, _ = load_model(original, device)
    after, _ = load_model(enhanced, device)
    dataset = SegmentationDataset(cfg.data.processed_dir, split, instantiate(cfg.test.transform))
    with torch.no_grad():
        rows = before_after_rows(dataset, before, after, device, to_rgb, count=4)
    return save_before_after_figure(
        Path(cfg.report.figures_dir) / "original_vs_enhanced.png", rows,
        title=f"Original vs enhanced model on split '{split}' ({cfg.experiment_name}): the {len(rows)} images "
              "where their predictions differ most (as the paper's Fig. 6)")
