"""stage=serve: checkpoints found in the tracking store and the config, bound to 127.0.0.1, stops
cleanly on Ctrl-C with its MLflow run FINISHED."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from cli_factory import cli_env
from processed_factory import write_processed
from serve_factory import write_checkpoint, write_review_file

from vqi import tracking
from vqi.stages.serve import discovered_checkpoints


def _train_run(uri: str, name: str, checkpoint_dir) -> str:
    experiment = tracking.configure(uri, "vqi-demo")  # the experiment a demo CLI run uses
    with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
        mlflow.set_tags({"stage": "train", "checkpoint_dir": str(checkpoint_dir)})
    return run.info.run_id


def test_discovery_lists_logged_checkpoints_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpts = tmp_path / "ckpts"
    write_checkpoint(ckpts / "best.pt")
    (ckpts / "last.pt").write_bytes((ckpts / "best.pt").read_bytes())
    _train_run(uri, "train-demo-baseline", ckpts)
    time.sleep(0.01)
    _train_run(uri, "train-demo-baseline", ckpts)          # a rerun: same files, listed once
    _train_run(uri, "train-gone", tmp_path / "deleted")     # files no longer there: not listed
    found = discovered_checkpoints(uri, "vqi-demo")
    assert found == {"train-demo-baseline-best": (ckpts / "best.pt").resolve(),
                     "train-demo-baseline-last": (ckpts / "last.pt").resolve()}
    assert discovered_checkpoints(uri, "no-such-experiment") == {}


def test_missing_configured_checkpoint_is_an_error(make_cfg, tmp_path):
    from vqi.stages.serve import registry_entries

    cfg = make_cfg(f"+serve.checkpoints.mine={tmp_path / 'nope.pt'}", "serve.discover=false", stage="serve")
    with pytest.raises(FileNotFoundError, match="serve.checkpoints: no such file for mine="):
        registry_entries(cfg)


def test_the_review_page_bounds_k_by_augment_enlarge_k_max(make_cfg, tmp_path):
    from vqi.stages.serve import build_app

    processed = write_processed(tmp_path / "processed", {"train": 1}, size=32)
    review_file = tmp_path / "review" / "review.csv"
    write_review_file(review_file, processed)
    cfg = make_cfg("serve.discover=false", f"data.processed_dir={processed}", f"augment.review_file={review_file}",
                   "augment.enlarge.k_max=4", stage="serve")
    client = build_app(cfg)[0].test_client()
    data = client.get("/api/review").get_json()
    assert data["k_max"] == 4
    enlarge = next(p for p in data["proposals"] if p["kind"] == "enlarge")
    refused = client.post("/api/review", json={"proposal_id": enlarge["proposal_id"], "version": enlarge["version"], "k": 5})
    assert refused.status_code == 400 and "from 0 to 4" in refused.get_json()["error"]


@pytest.mark.slow
def test_serve_cli(tmp_path, tmp_paths):
    outputs = tmp_path / "outputs"
    ckpts = outputs / "checkpoints"
    write_checkpoint(ckpts / "best.pt")
    _train_run(f"sqlite:///{outputs / 'mlflow.db'}", "train-demo-baseline", ckpts)
    extra = write_checkpoint(tmp_path / "other" / "model.pt")
    proc = subprocess.Popen([sys.executable, "-m", "vqi.run", "stage=serve", "serve.port=0",
                             f"+serve.checkpoints.mine={extra}", *tmp_paths], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cli_env())
    try:
        url, seen = None, []
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if line.startswith("serving on "):
                url = line.split()[2]
        assert url is not None, "".join(seen)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/models", timeout=30) as response:
            models = json.load(response)["models"]
        assert models == ["mine", "train-demo-baseline-best"]
        with urllib.request.urlopen(url + "review", timeout=30) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest[-3000:]
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vqi-demo").experiment_id], "tags.stage = 'serve'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["serve_url"] == url
