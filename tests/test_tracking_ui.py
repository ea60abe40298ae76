"""The MLflow UI: one experiment per setting, tagged so MLflow 3 treats it as model training,
and addresses that open each experiment's runs table."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from vqi import tracking


def test_a_new_experiment_and_an_old_one_are_tagged_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("vqi-old")  # made before the tag existed
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    for name in ("vqi-old", "vqi-new"):
        experiment = client.get_experiment(tracking.configure(uri, name))
        assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_demo_and_paper_settings_log_to_separate_experiments(make_cfg):
    demo = make_cfg(stage="train").tracking.experiment
    paper = make_cfg("experiment=paper", stage="train").tracking.experiment
    assert (demo, paper) == ("vqi-demo", "vqi-paper")


def test_ui_links_open_the_runs_of_experiments_that_have_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    used = tracking.configure(uri, "vqi-demo")
    tracking.configure(uri, "vqi-paper")  # no runs yet: no address
    MlflowClient(uri).create_run(used)
    assert tracking.ui_links(uri, "http://127.0.0.1:5000/") == {
        "vqi-demo": f"http://127.0.0.1:5000/#/experiments/{used}/runs?workflowType=machine_learning"}
