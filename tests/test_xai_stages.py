"""stage=explain, evaluate and report end to end: real Hydra config, real MLflow (tmp SQLite),
a tiny prepared dataset and a random-weight checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from xai_factory import write_checkpoint, xai_setup

from vqi import tracking
from vqi.stages import evaluate, explain
from vqi.xai.maps import load_maps, read_meta


def _in_run(cfg, module, name):
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name):
        mlflow.set_tag("stage", name)
        return module.run(cfg)


def test_explain_then_evaluate_writes_maps_and_logs_metrics(make_cfg, tmp_path):
    engine = "fast"
    cfg = make_cfg(*xai_setup(tmp_path), "xai=gradcampp", "xai.figures=1", stage="explain")
    out = _in_run(cfg, explain, "explain")
    method_dir = Path(cfg.xai.maps_dir) / "gradcampp"
    meta = read_meta(method_dir)
    assert meta["engine"] == engine and meta["target"] == "gt" and len(meta["images"]) == 2
    assert out["units"] == sum(len(m["classes"]) for m in meta["images"].values()) > 0
    for stem, info in meta["images"].items():
        maps = load_maps(method_dir / f"{stem}.npz")
        assert sorted(maps) == sorted(info["classes"])
        assert all(m.shape == (40, 40) and m.dtype == np.float32 for m in maps.values())
    assert len(list(Path(cfg.xai.figures_dir).glob("*.png"))) == 1

    metrics = _in_run(cfg, evaluate, "evaluate")
    for key in ("ebpg", "bbox", "iou", "drop", "increase", "pointing", "deletion", "insertion", "time", "units",
                "images"):
        assert key in metrics and np.isfinite(metrics[key])
    assert metrics["units"] == out["units"]
    assert 0 <= metrics["ebpg"] <= 100 and 0 <= metrics["drop"] <= 100
    per_class = [k for k in metrics if k.startswith("ebpg/")]
    assert per_class and sum(metrics[f"units/{k.split('/')[1]}"] for k in per_class) == metrics["units"]
    saved = json.loads((method_dir / "metrics.json").read_text())
    assert saved["metrics"]["ebpg"] == pytest.approx(metrics["ebpg"])
    assert len(saved["curves"]["deletion"]) == cfg.metrics.deletion_steps + 1
    assert saved["curves"]["deletion"][0] == pytest.approx(1.0)    # nothing deleted yet: conf_c(x) / conf_c(x)
    assert (Path(cfg.xai.figures_dir) / "deletion_insertion.png").is_file()
    history = MlflowClient().get_metric_history(mlflow.last_active_run().info.run_id, "insertion_curve")
    assert [m.step for m in history] == list(range(cfg.metrics.deletion_steps + 1))


def test_fast_and_library_engines_give_the_same_maps(make_cfg, tmp_path):
    maps = {}
    for engine in ("fast", "library"):
        cfg = make_cfg(*xai_setup(tmp_path), "xai=hirescam", f"xai.engine={engine}",
                       f"xai.maps_dir={tmp_path / engine}", stage="explain")
        _in_run(cfg, explain, "explain")
        d = Path(cfg.xai.maps_dir) / "hirescam"
        maps[engine] = {p.stem: load_maps(p) for p in d.glob("*.npz")}
    assert maps["fast"].keys() == maps["library"].keys()
    for stem, per_class in maps["fast"].items():
        for name, cam in per_class.items():
            assert np.abs(cam - maps["library"][stem][name]).max() <= 1e-2


def test_evaluate_refuses_maps_of_another_checkpoint(make_cfg, tmp_path):
    overrides = xai_setup(tmp_path)
    cfg = make_cfg(*overrides, stage="explain")
    _in_run(cfg, explain, "explain")
    write_checkpoint(Path(cfg.xai.checkpoint), seed=1)   # retrained since: the maps are stale
    with pytest.raises(ValueError, match="run stage=explain"):
        _in_run(make_cfg(*overrides, stage="evaluate"), evaluate, "evaluate")


def test_an_interrupted_re_explain_leaves_the_old_maps_whole_and_evaluate_refuses_the_new_model(
        make_cfg, tmp_path, monkeypatch):
    """Re-explaining with another checkpoint dies after its first map: the method's folder must
    still be all the old model's (no mixture for evaluate to score), and no temporary is left."""
    overrides = [*xai_setup(tmp_path, test_images=2), "xai.figures=1"]
    _in_run(make_cfg(*overrides, stage="explain"), explain, "explain")
    method_dir = Path(make_cfg(*overrides, stage="explain").xai.maps_dir) / "gradcam"
    before = {p.name: p.read_bytes() for p in method_dir.iterdir()}
    other = write_checkpoint(tmp_path / "other" / "best.pt", seed=1)
    real = explain.save_maps

    def save_then_die(path, maps, **kwargs):
        real(path, maps, **kwargs)
        raise RuntimeError("interrupted after the first map")

    monkeypatch.setattr(explain, "save_maps", save_then_die)
    with pytest.raises(RuntimeError, match="interrupted"):
        _in_run(make_cfg(*overrides, f"xai.checkpoint={other}", stage="explain"), explain, "explain")
    assert {p.name: p.read_bytes() for p in method_dir.iterdir()} == before   # all the old model's
    assert sorted(p.name for p in method_dir.parent.iterdir()) == ["gradcam"]  # no temporary left
    with pytest.raises(ValueError, match=r"explain\.json: maps were made from checkpoint .*run stage=explain"):
        _in_run(make_cfg(*overrides, f"xai.checkpoint={other}", stage="evaluate"), evaluate, "evaluate")


@pytest.mark.slow
def test_sweep_then_report_writes_table1_and_chosen_method(run_cli, tmp_path):
    overrides = xai_setup(tmp_path, test_images=2, size=40)
    # backbone.4 (40 channels) keeps ScoreCAM's masked passes few; the last block has 960.
    run_cli("-m", "stage=explain,evaluate", "xai=gradcam,hirescam,scorecam", "xai.figures=0",
            "model.target_layer=backbone.4", *overrides)
    run_cli("stage=report", "xai_methods=[gradcam,hirescam,scorecam]", *overrides)
    tables = tmp_path / "outputs" / "tables"
    md = (tables / "table1.md").read_text()
    for label in ("GradCAM", "HiResCAM", "ScoreCAM", "EBPG↑", "Time(s)↓", "**"):
        assert label in md
    rows = (tables / "table1.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("Method,EBPG↑,Bbox↑,IoU↑,Drop↓,Inc↑,Time(s)↓,Units")
    assert r"\textbf" in (tables / "table1.tex").read_text()
    chosen = json.loads((tables / "chosen_method.json").read_text())
    assert chosen["method"] in ("gradcam", "hirescam", "scorecam")
    assert "Chosen method: " in md
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vqi-demo")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'evaluate'")
    assert sorted(r.info.run_name for r in runs) == ["evaluate-gradcam", "evaluate-hirescam", "evaluate-scorecam"]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert all(r.data.tags["checkpoint_hash"] == chosen["checkpoint_hash"] for r in runs)


def test_cpu_explain_and_evaluate_ignore_mixed_precision(make_cfg, tmp_path):
    """xai.amp applies on CUDA only: on the CPU the maps are byte-identical and the metrics equal."""
    results = {}
    for amp in ("false", "true"):
        overrides = [*xai_setup(tmp_path), "xai=gradcam", f"xai.amp={amp}", "xai.amp_dtype=bfloat16",
                     f"xai.maps_dir={tmp_path / amp}"]
        _in_run(make_cfg(*overrides, stage="explain"), explain, "explain")
        metrics = _in_run(make_cfg(*overrides, stage="evaluate"), evaluate, "evaluate")
        method_dir = tmp_path / amp / "gradcam"
        assert read_meta(method_dir)["precision"] == "float32"
        results[amp] = ({p.name: p.read_bytes() for p in method_dir.glob("*.npz")},
                        {k: v for k, v in metrics.items() if k != "time"})
    assert results["true"] == results["false"]
