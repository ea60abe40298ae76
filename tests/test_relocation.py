"""A moved or copied checkout: its training identity, reuse keys, MLflow artifacts and served
checkpoints follow the copy instead of pointing at (or being refused because of) the original."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from cli_factory import cli_env
from mlflow.tracking import MlflowClient

from vqi import tracking
from vqi.config import relocatable
from vqi.models.checkpoint import load_checkpoint
from vqi.stages.serve import discovered_checkpoints

SMALL = ["data.generator.num_images=8", "data.generator.size=64", "data.preview_images=0", "data.image_size=64",
         "train.epochs=2", "train.batch_size=2", "train.num_workers=0", "train.progress=false",
         "train.transforms.train.crop=64", "train.eval_untrained=false", "xai.figures=0", "xai.progress=false",
         "device=cpu"]


def copy_checkout(src: Path, dst: Path) -> Path:
    """Copy as `cp -r` would: new paths and new modification times."""
    shutil.copytree(src, dst)
    later = time.time() + 60
    for path in dst.rglob("*"):
        os.utime(path, (later, later), follow_symlinks=False)
    return dst


def vqi(root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "vqi.run", *args, *SMALL, f"paths.root_dir={root}"],
                          cwd=root.parent, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_relocatable_config_hides_the_checkout_folders():
    def config(root: str) -> dict:
        return {"paths": {"root_dir": root, "output_dir": f"{root}/outputs", "data_dir": f"{root}/data"},
                "data": {"processed_dir": f"{root}/data/processed/x", "elsewhere": "/srv/ttpla"},
                "train": {"checkpoint_dir": f"{root}/outputs/ck", "lr": 0.1, "tags": [f"{root}/data"]}}

    a, b = relocatable(config("/home/a/vqi")), relocatable(config("/tmp/copy"))
    assert a == b and "paths" not in a
    assert a["data"] == {"processed_dir": "${paths.data_dir}/processed/x", "elsewhere": "/srv/ttpla"}
    assert relocatable(config("/home/a/vqi-old")) == a


def test_a_copied_store_writes_and_reads_artifacts_in_the_copy(tmp_path):
    a = tmp_path / "a" / "outputs"
    experiment = tracking.configure(f"sqlite:///{a / 'mlflow.db'}", "vqi", str(a / "mlartifacts"))
    (tmp_path / "note.txt").write_text("hello")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(tmp_path / "note.txt"))
    b = copy_checkout(tmp_path / "a", tmp_path / "b") / "outputs"
    copied = tracking.configure(f"sqlite:///{b / 'mlflow.db'}", "vqi", str(b / "mlartifacts"))
    assert copied == experiment
    client = MlflowClient(f"sqlite:///{b / 'mlflow.db'}")
    assert client.get_experiment(copied).artifact_location == (b / "mlartifacts").as_uri()
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith((b / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=copied) as new:
        mlflow.log_artifact(str(tmp_path / "note.txt"), artifact_path="more")
    assert (b / "mlartifacts" / new.info.run_id).is_dir() and not (a / "mlartifacts" / new.info.run_id).exists()
    assert Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path))).read_text() == "hello"


@pytest.mark.slow
def test_a_copied_checkout_resumes_training_and_reuses_its_finished_stages(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    vqi(a, "stage=prepare")
    vqi(a, "stage=train", "train.stop_after_epochs=1")                 # unfinished: 1 of 2 epochs
    b = copy_checkout(a, tmp_path / "b")
    resumed = vqi(b, "stage=train")
    assert "resuming" in resumed and "at epoch 1/2" in resumed and "different training config" not in resumed
    vqi(b, "stage=explain")
    assert load_checkpoint(a / "outputs" / "checkpoints" / "demo" / "baseline" / "last.pt")["epoch"] == 1
    c = copy_checkout(b, tmp_path / "c")
    assert "up to date (fingerprint" in vqi(c, "stage=prepare")
    assert "reusing the finished training" in vqi(c, "stage=train")
    assert "stage explain: reusing run" in vqi(c, "stage=explain")
    found = discovered_checkpoints(f"sqlite:///{c / 'outputs' / 'mlflow.db'}", "vqi-demo")
    assert found and all(c in path.parents for path in found.values())
    client = MlflowClient(f"sqlite:///{c / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vqi-demo").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.info.artifact_uri.startswith((c / "outputs").as_uri()) for r in runs)
