"""What one invocation records: every step of `stage=all` logs the config it ran with, and the
runs of one invocation are grouped under a parent run (tag `pipeline_id`). Real CLI, real store."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from xai_factory import write_checkpoint, xai_setup

from vqi import run, tracking
from vqi.config import CONFIG_DIR, register_resolvers

TINY = ["experiment=debug"]


def _store(tmp_path: Path, name: str = "vqi-debug"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    return client, client.get_experiment_by_name(name).experiment_id


def _config(client: MlflowClient, run) -> dict:
    path = client.download_artifacts(run.info.run_id, ".hydra/config.yaml")
    return yaml.safe_load(Path(path).read_text())


def test_all_groups_its_steps_under_a_parent_and_each_logs_its_own_config(run_cli, tmp_path):
    run_cli("stage=all", "until=prepare", *TINY)
    run_cli("stage=prepare", *TINY)
    client, experiment = _store(tmp_path)
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    parent, step, single = runs
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert parent.data.tags["stage"] == "all" and parent.info.run_name == "all-debug-until-prepare"
    assert step.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert step.data.tags["pipeline_id"] == parent.data.tags["pipeline_id"] == parent.info.run_id
    assert _config(client, parent)["stage"] == "all"
    assert _config(client, step)["stage"] == "prepare"
    assert "stage=prepare" in yaml.safe_load(Path(client.download_artifacts(
        step.info.run_id, ".hydra/overrides.yaml")).read_text())
    assert "mlflow.parentRunId" not in single.data.tags and single.data.tags["pipeline_id"] not in (
        parent.data.tags["pipeline_id"], "")


@pytest.mark.slow
def test_each_method_step_records_its_own_xai_config(run_cli, tmp_path):
    run_cli("stage=all", "until=explain", "xai_methods=[gradcam,hirescam]", "xai.figures=0", *TINY)
    client, experiment = _store(tmp_path)
    runs = client.search_runs([experiment])
    assert {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = [r for r in runs if r.data.tags["stage"] == "all"]
    explained = {}
    for run in runs:
        if run is not parent:
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            config = _config(client, run)
            assert config["stage"] == run.data.tags["stage"]
            if config["stage"] == "explain":  # the method it explained with, the method it logged
                explained[run.data.tags["xai_method"]] = config["xai"]["name"]
    assert explained == {"gradcam": "gradcam", "hirescam": "hirescam"}


def test_all_stops_after_a_report_where_nothing_was_explained(tmp_path, tmp_paths):
    """A model that predicts no foreground gives every method 0 units: `stage=all` must end
    after the report with an error naming the cause and the remedy, not run augment and
    retrain on nothing. The invocation's own steps from explain on, in one Hydra app context."""
    overrides = ["stage=all", *xai_setup(tmp_path), "xai.target=pred", "xai.figures=0", "xai_methods=[gradcam]",
                 *tmp_paths]
    write_checkpoint(tmp_path / "ckpt" / "best.pt", background_only=True)
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "outputs" / "runs" / "all")
        HydraConfig.instance().set_config(cfg)
        try:
            with open_dict(cfg):
                del cfg["hydra"]   # as Hydra hands the config to the app
            jobs = [j for j in run._jobs(cfg) if j.stage not in ("prepare", "train", "test")]
            assert [j.stage for j in jobs] == ["explain", "evaluate", "report", "augment", "retrain", "compare"]
            experiment = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
            with pytest.raises(run.PipelineStopped, match=r"every method explained 0 units.*Train longer \(train.epochs\)"):
                run._run_pipeline(cfg, jobs, experiment)
        finally:
            HydraConfig.instance().cfg = None
    client, experiment = _store(tmp_path, "vqi-demo")   # the default composition, not debug
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment])}
    assert sorted(runs) == ["all", "evaluate", "explain", "report"]          # no augment, no retrain
    assert runs["report"].info.status == "FINISHED" and runs["all"].info.status == "FAILED"
    assert "augment and retrain were not run" in runs["all"].data.tags["end_reason"]
