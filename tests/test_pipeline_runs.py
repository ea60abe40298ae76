"""What one invocation records: every step of `stage=all` logs the config it ran with, and the
runs of one invocation are grouped under a parent run (tag `pipeline_id`). Real CLI, real store."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

TINY = ["data.generator.num_images=8", "data.generator.size=64", "data.preview_images=0"]


def _store(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    return client, client.get_experiment_by_name("vqi-demo").experiment_id


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
    assert parent.data.tags["stage"] == "all" and parent.info.run_name == "all-demo-until-prepare"
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
    run_cli("stage=all", "until=explain", "xai_methods=[gradcam,hirescam]", "data.image_size=64",
            "train.epochs=1", "train.batch_size=2", "train.num_workers=0", "train.progress=false",
            "train.transforms.train.crop=64", "xai.figures=0", *TINY)
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
