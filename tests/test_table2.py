"""Table II from tracked test runs: the latest original and enhanced runs, IoU in %, best marked."""
from __future__ import annotations

import os

import mlflow
import pytest

from vqi import tracking
from vqi.config import enhanced_config
from vqi.stages.compare import table2

IOU = {"iou_cable": 0.5506, "iou_tower_wooden": 0.9475, "iou_tower_lattice": 0.9531,
       "iou_tower_tucohy": 0.9063, "iou_overall": 0.8394, "iou_background": 0.99, "miou_5": 0.87}


def _log(experiment_id, stage, checkpoint, metrics, split="test"):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"stage": stage, "checkpoint": checkpoint, "split": split})
        mlflow.log_metrics(metrics)
    return run.info.run_id


def test_table2_from_the_latest_original_and_enhanced_runs(make_cfg):
    cfg = make_cfg(stage="compare")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        assert table2(cfg, experiment_id) == {}          # nothing tested yet: no table
    original, enhanced = str(cfg.test.checkpoint), str(enhanced_config(cfg).test.checkpoint)
    assert original != enhanced
    _log(experiment_id, "test", original, {**IOU, "iou_cable": 0.1})         # an older run
    first = _log(experiment_id, "test", original, IOU)
    _log(experiment_id, "test", original, {**IOU, "iou_cable": 0.9}, split="val")  # other split
    second = _log(experiment_id, "retrain", enhanced, {**IOU, "iou_cable": 0.5811, "iou_overall": 0.84715})
    with mlflow.start_run(experiment_id=experiment_id):  # the compare stage's own run
        deltas = table2(cfg, experiment_id)
    assert deltas["delta/iou_cable"] == pytest.approx(3.05)
    assert deltas["delta/iou_overall"] == pytest.approx(0.775)
    md = (cfg.paths.tables_dir + "/table2.md")
    text = open(md).read()
    assert "| Original | 55.06 | **94.75** | **95.31** | **90.63** | 83.940 |" in text  # ties: both bold
    assert "| Enhanced | **58.11** |" in text and "**84.715**" in text
    assert first in text and second in text
    csv_text = open(cfg.paths.tables_dir + "/table2.csv").read()
    assert csv_text.splitlines()[0].startswith("Model,cable,tower_wooden")
    assert not os.path.exists(cfg.paths.tables_dir + "/table2_truth.md")   # no truth: no such table


def test_table2_against_truth_beside_annotation_when_the_test_split_has_truth(make_cfg):
    cfg = make_cfg(stage="compare")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    truth = {f"truth/{k}": v - 0.05 for k, v in IOU.items()}
    _log(experiment_id, "test", str(cfg.test.checkpoint), {**IOU, **truth})
    _log(experiment_id, "retrain", str(enhanced_config(cfg).test.checkpoint),
         {**IOU, **truth, "truth/iou_cable": 0.6})
    with mlflow.start_run(experiment_id=experiment_id):
        table2(cfg, experiment_id)
    annotated = open(cfg.paths.tables_dir + "/table2.md").read()
    against = open(cfg.paths.tables_dir + "/table2_truth.md").read()
    assert "| Original | **55.06** |" in annotated and "against truth" not in annotated   # a tie: both bold
    assert "Table II against truth" in against
    assert "| Original | 50.06 | **89.75** |" in against and "| Enhanced | **60.00** |" in against
