"""Table I: the table writer, the winner rule, and stage=report over real MLflow runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from vqi import tracking
from vqi.reporting.table1 import MethodResult, build_table1, choose_method
from vqi.reporting.tables import Column, Table, write_table
from vqi.stages import report
from vqi.xai.maps import file_hash

SIX = ("ebpg", "bbox", "iou", "drop", "increase", "time")


def _result(method, values, device="cpu (2 threads)"):
    return MethodResult(method, dict(zip(SIX, values), units=10.0), device)


def test_table_marks_best_per_direction_and_ties_in_every_format(tmp_path):
    table = Table("Model", [Column("a", "A↑", "higher"), Column("b", "B↓", "lower"), Column("n", "N", None, 0)])
    table.rows += [("x", {"a": 1.0, "b": 5.0, "n": 3}), ("y", {"a": 1.0, "b": 2.0, "n": 4}),
                   ("z", {"a": 0.5, "b": float("nan"), "n": 5})]
    assert table.best("a") == {"x", "y"} and table.best("b") == {"y"} and table.best("n") == set()
    md = table.markdown()
    assert "| x | **1.00** | 5.00 | 3 |" in md and "| z | 0.50 | – | 5 |" in md
    paths = write_table(table, tmp_path, "t")
    assert [p.name for p in paths] == ["t.md", "t.csv", "t.tex"]
    csv_rows = (tmp_path / "t.csv").read_text().splitlines()
    assert csv_rows[0] == "Model,A↑,B↓,N,best_in" and csv_rows[2] == "y,1.00,2.00,4,a;b"
    tex = (tmp_path / "t.tex").read_text()
    assert r"A$\uparrow$" in tex and r"\textbf{2.00}" in tex and "z & 0.50 & -- & 5" in tex


def test_winner_most_columns_then_mean_rank_then_order():
    results = [_result("gradcam", [50, 40, 40, 5, 50, 1.0]),      # wins time
               _result("hirescam", [60, 40, 45, 6, 50, 2.0]),     # wins ebpg, iou, bbox(tie), inc(tie)
               _result("scorecam", [55, 40, 44, 4, 50, 30.0])]    # wins drop, bbox(tie), inc(tie)
    table = build_table1(results)
    winner, wins = choose_method(table, results)
    assert wins == {"gradcam": 3, "hirescam": 4, "scorecam": 3} and winner == "hirescam"
    tied = [_result("b", [1, 3, 1, 1, 1, 1]), _result("a", [3, 2, 1, 1, 1, 1]), _result("c", [2, 1, 1, 1, 1, 1])]
    # a and b win 5 columns each (one of ebpg/bbox + four ties); a ranks 1st and 2nd, b 3rd and 1st
    assert choose_method(build_table1(tied), tied) == ("a", {"b": 5, "a": 5, "c": 4})
    same = [_result("a", [1] * 6), _result("b", [1] * 6)]
    assert choose_method(build_table1(same), same)[0] == "a"    # full tie: table order


def test_row_names_are_the_labels_of_conf_xai():
    table = build_table1([_result("gradcampp", [1] * 6), _result("impactx", [1] * 6), _result("mine", [1] * 6)])
    assert [name for name, _ in table.rows] == ["GradCAM++", "IMPACTX", "mine"]    # no yaml: its own name


def test_times_from_different_devices_are_not_ranked():
    results = [_result("gradcam", [50, 40, 40, 5, 50, 1.0], "cpu"),
               _result("scorecam", [50, 40, 40, 5, 50, 9.0], "cuda: H100")]
    table = build_table1(results)
    assert table.best("time") == set() and any("different devices" in n for n in table.notes)
    assert choose_method(table, results)[1] == {"gradcam": 5, "scorecam": 5}


def _log_evaluate(experiment_id, method, ckpt_hash, metrics, device="cpu (2 threads)"):
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate-{method}"):
        mlflow.set_tags({"stage": "evaluate", "xai_method": method, "checkpoint_hash": ckpt_hash,
                         "device": device})
        mlflow.log_metrics(metrics)
    time.sleep(0.01)  # distinct start times: "latest" is well defined


def test_report_stage_builds_table1_from_latest_runs_of_the_checkpoint(make_cfg, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"a checkpoint's bytes")
    cfg = make_cfg(f"xai.checkpoint={ckpt}", "xai_methods=[gradcam,scorecam,hirescam]", stage="report")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    h = file_hash(ckpt)
    base = {"units": 7.0, "images": 3.0, "skipped/in_gt_not_predicted": 2.0}
    _log_evaluate(experiment_id, "gradcam", h, {**base, **dict(zip(SIX, [10, 10, 10, 50, 0, 0.1]))})   # stale
    _log_evaluate(experiment_id, "gradcam", h, {**base, **dict(zip(SIX, [70, 60, 50, 5, 60, 0.2]))})
    _log_evaluate(experiment_id, "scorecam", h, {**base, **dict(zip(SIX, [60, 50, 40, 4, 50, 9.0]))})
    _log_evaluate(experiment_id, "hirescam", "another", {**base, **dict(zip(SIX, [99] * 6))})        # other ckpt
    with mlflow.start_run(experiment_id=experiment_id) as run:
        out = report.run(cfg)
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert logged == {"figures/table1_chart.png"}  # no maps of these methods: no every-method figure
    assert (Path(cfg.report.figures_dir) / "table1_chart.png").is_file()
    tables = Path(cfg.paths.tables_dir)
    md = (tables / "table1.md").read_text()
    assert "| GradCAM | **70.00** | **60.00** | **50.00** | 5.00 | **60.00** | **0.200** | 7 |" in md
    assert "| ScoreCAM | 60.00 | 50.00 | 40.00 | **4.00** |" in md
    assert "HiResCAM" not in md.split("Not evaluated")[0] and "Not evaluated for this checkpoint: hirescam" in md
    assert "in_gt_not_predicted 2" in md and "cpu (2 threads)" in md
    chosen = json.loads((tables / "chosen_method.json").read_text())
    assert chosen["method"] == "gradcam" and chosen["wins"] == {"gradcam": 5, "scorecam": 1}
    assert chosen["checkpoint_hash"] == h and out["wins/gradcam"] == 5


def test_report_without_runs_says_what_to_run(make_cfg, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    cfg = make_cfg(f"xai.checkpoint={ckpt}", stage="report")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id), pytest.raises(ValueError, match="stage=explain,evaluate"):
        report.run(cfg)


def _log_sanity(experiment_id, ckpt_hash, finals: dict[str, tuple[float, float]], undefined=()):
    """A finished sanity run: {method: (rho, abs_rho)}; `undefined` methods were checked, rho NaN."""
    with mlflow.start_run(experiment_id=experiment_id, run_name="sanity"):
        methods = [*finals, *undefined]
        mlflow.set_tags({"stage": "sanity", "checkpoint_hash": ckpt_hash, "device": "cpu (2 threads)",
                         "sanity_methods": ",".join(methods)})
        mlflow.log_metrics({"units": 9.0, **{f"final_ssim/{m}": 0.1 for m in methods},
                            **{f"final_rho/{m}": v[0] for m, v in finals.items()},
                            **{f"final_abs_rho/{m}": v[1] for m, v in finals.items()}})
    time.sleep(0.01)


def _trust_metrics(values, deletion, insertion, pointing):
    return {**dict(zip(SIX, values)), "units": 7.0, "deletion": deletion, "insertion": insertion,
            "pointing": pointing}


def test_table3_flags_a_chosen_method_that_fails_sanity_or_does_not_beat_random_cam(make_cfg, tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    h = file_hash(ckpt)
    cfg = make_cfg(f"xai.checkpoint={ckpt}", "xai_methods=[gradcam,hirescam,random_cam]", stage="report")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    # gradcam wins Table I but fails the sanity check and loses to the floor on deletion;
    # random_cam is fastest (wins Time) but is the floor: never chosen, never counted.
    _log_evaluate(experiment_id, "gradcam", h, _trust_metrics([70, 60, 50, 5, 60, 0.2], 40.0, 60.0, 90.0))
    _log_evaluate(experiment_id, "hirescam", h, _trust_metrics([60, 50, 40, 6, 50, 0.3], 20.0, 70.0, 95.0))
    _log_evaluate(experiment_id, "random_cam", h, _trust_metrics([10, 10, 10, 50, 0, 0.01], 30.0, 50.0, 20.0))
    _log_sanity(experiment_id, h, {"gradcam": (0.6, 0.6), "hirescam": (0.05, 0.1)}, undefined=["random_cam"])
    with mlflow.start_run(experiment_id=experiment_id):
        report.run(cfg)
    tables = Path(cfg.paths.tables_dir)
    chosen = json.loads((tables / "chosen_method.json").read_text())
    assert chosen["method"] == "gradcam" and chosen["wins"] == {"gradcam": 6, "hirescam": 0}
    assert chosen["sanity_pass"] is False and chosen["beats_floor"] is False
    md3 = (tables / "table3.md").read_text()
    assert "| GradCAM | 0.60 | 0.60 | 0.10 | 40.00 | 60.00 | 90.00 | 7 |" in md3
    assert "| HiResCAM | **0.10** | 0.05 | 0.10 | **20.00** | **70.00** | **95.00** | 7 |" in md3
    assert "| Random-CAM | undefined | undefined | 0.10 | 30.00 | 50.00 | 20.00 | 7 |" in md3
    for text in ("FAILS the sanity check", "does not beat Random-CAM on deletion (40.00 vs 30.00)",
                 "in % of conf_c(x)", "cpu (2 threads)", "Sanity correlation undefined: Random-CAM"):
        assert text in md3
    assert "FAILS the sanity check" in (tables / "table1.md").read_text()
    assert (tables / "table3.csv").read_text().splitlines()[0].startswith("Method,Sanity abs(ρ)↓,Sanity ρ,Sanity SSIM")
    assert r"\textbf{20.00}" in (tables / "table3.tex").read_text()

    cfg3 = make_cfg(f"xai.checkpoint={ckpt}", "xai_methods=[gradcam,hirescam,random_cam]",
                    "report.choose_by=table3", stage="report")
    with mlflow.start_run(experiment_id=experiment_id):
        report.run(cfg3)
    chosen = json.loads((tables / "chosen_method.json").read_text())
    assert chosen["method"] == "hirescam" and chosen["choose_by"] == "table3"
    assert chosen["sanity_pass"] is True and chosen["beats_floor"] is True
    assert "HiResCAM beats Random-CAM on deletion, insertion and pointing" in (tables / "table3.md").read_text()


def test_report_with_no_unit_for_any_method_chooses_none_and_says_why(make_cfg, tmp_path):
    """An undertrained model predicts no foreground: every method explains 0 units. The report
    must say so, choose no method (an older chosen_method.json goes: augment must not use it)
    and draw no empty chart."""
    from xai_factory import write_checkpoint, xai_setup

    from vqi.stages import evaluate, explain

    overrides = [*xai_setup(tmp_path), "xai.target=pred", "xai.figures=0", "xai_methods=[gradcam,random_cam]"]
    write_checkpoint(tmp_path / "ckpt" / "best.pt", background_only=True)
    cfg = make_cfg(*overrides, stage="report")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    for method in ("gradcam", "random_cam"):
        for stage, module in (("explain", explain), ("evaluate", evaluate)):
            with mlflow.start_run(experiment_id=experiment_id):
                mlflow.set_tag("stage", stage)
                metrics = module.run(make_cfg(*overrides, f"xai={method}", stage=stage))
                mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})   # not NaN, as vqi.run logs them
    tables = Path(cfg.paths.tables_dir)
    tables.mkdir(parents=True)
    (tables / "chosen_method.json").write_text(json.dumps({"method": "hirescam", "checkpoint_hash": "older"}))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        out = report.run(cfg)
    assert out["units"] == 0 and not any(k.startswith("wins/") for k in out)
    assert not (tables / "chosen_method.json").exists()
    md = (tables / "table1.md").read_text()
    assert "Chosen method" not in md
    assert "No method is chosen: every method explained 0 units" in md and "train longer" in md
    assert not (Path(cfg.report.figures_dir) / "table1_chart.png").exists()
    assert MlflowClient().get_run(run.info.run_id).data.tags["chosen_method"] == "none"
