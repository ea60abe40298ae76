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

SMALL = ["experiment=debug", "train.epochs=2", "xai.figures=0", "device=cpu"]   # 2 epochs: one to interrupt after


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


def _logged_run(experiment: str, note: Path, key: str) -> str:
    """A finished train run that logged `note` and can be found for reuse by `key`."""
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.set_tags({"stage": "train", "reuse_key": key})
        mlflow.log_artifact(str(note))
    return run.info.run_id


def test_a_copied_store_writes_in_the_copy_and_keeps_its_runs_in_reach(tmp_path):
    a = tmp_path / "a" / "outputs"
    experiment = tracking.configure(f"sqlite:///{a / 'mlflow.db'}", "vqi", str(a / "mlartifacts"))
    (tmp_path / "note.txt").write_text("hello")
    old = _logged_run(experiment, tmp_path / "note.txt", "k1")
    b = copy_checkout(tmp_path / "a", tmp_path / "b") / "outputs"
    copied = tracking.configure(f"sqlite:///{b / 'mlflow.db'}", "vqi", str(b / "mlartifacts"))
    client = MlflowClient(f"sqlite:///{b / 'mlflow.db'}")
    assert client.get_experiment(copied).artifact_location == (b / "mlartifacts").as_uri()
    assert client.get_experiment(experiment).name == f"vqi (earlier location #{experiment})"
    assert tracking.lineage(copied, client) == [copied, experiment]
    assert tracking.configure(f"sqlite:///{b / 'mlflow.db'}", "vqi", str(b / "mlartifacts")) == copied
    new = _logged_run(copied, tmp_path / "note.txt", "k2")
    assert (b / "mlartifacts" / new).is_dir() and not (a / "mlartifacts" / new).exists()
    assert tracking.find_finished_run(copied, "train", "k1").info.run_id == old
    assert Path(client.download_artifacts(old, "note.txt", str(tmp_path))).read_text() == "hello"
    # the original store is left as it was
    original = MlflowClient(f"sqlite:///{a / 'mlflow.db'}")
    assert [e.name for e in original.search_experiments()] == ["vqi", "Default"]
    assert original.get_experiment(experiment).artifact_location == (a / "mlartifacts").as_uri()


def test_a_moved_store_writes_in_its_new_folder_and_reuses_its_runs_through_moves(tmp_path):
    a = tmp_path / "a" / "outputs"
    first = tracking.configure(f"sqlite:///{a / 'mlflow.db'}", "vqi", str(a / "mlartifacts"))
    (tmp_path / "note.txt").write_text("hello")
    old = _logged_run(first, tmp_path / "note.txt", "k1")
    ids = [first]
    for name in ("b", "c"):  # moved twice: the first experiment stays in reach
        shutil.move(tmp_path / ("a" if name == "b" else "b"), tmp_path / name)
        out = tmp_path / name / "outputs"
        ids.insert(0, tracking.configure(f"sqlite:///{out / 'mlflow.db'}", "vqi", str(out / "mlartifacts")))
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert tracking.lineage(ids[0], client) == ids and len(set(ids)) == 3
    assert client.get_experiment_by_name("vqi").experiment_id == ids[0]
    assert tracking.find_finished_run(ids[0], "train", "k1").info.run_id == old
    new = _logged_run(ids[0], tmp_path / "note.txt", "k2")
    assert (out / "mlartifacts" / new).is_dir() and not (tmp_path / "a").exists()


def test_a_resumed_run_from_before_the_move_continues_in_a_new_run(tmp_path):
    a = tmp_path / "a" / "outputs"
    first = tracking.configure(f"sqlite:///{a / 'mlflow.db'}", "vqi", str(a / "mlartifacts"))
    with mlflow.start_run(experiment_id=first) as unfinished:
        pass
    b = copy_checkout(tmp_path / "a", tmp_path / "b") / "outputs"
    copied = tracking.configure(f"sqlite:///{b / 'mlflow.db'}", "vqi", str(b / "mlartifacts"))
    with tracking.stage_run(copied, "train-debug-baseline", {"stage": "train"}, {"lr": "0.1"},
                            resume_run_id=unfinished.info.run_id) as run:
        pass
    assert run.info.run_id != unfinished.info.run_id and run.info.experiment_id == copied
    assert MlflowClient().get_run(run.info.run_id).data.tags["continues_run"] == unfinished.info.run_id
    assert run.info.artifact_uri.startswith((b / "mlartifacts").as_uri())


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
    assert load_checkpoint(a / "outputs" / "checkpoints" / "debug" / "baseline" / "last.pt")["epoch"] == 1
    c = copy_checkout(b, tmp_path / "c")
    assert "up to date (fingerprint" in vqi(c, "stage=prepare")
    assert "reusing the finished training" in vqi(c, "stage=train")
    assert "stage explain: reusing run" in vqi(c, "stage=explain")
    found = discovered_checkpoints(f"sqlite:///{c / 'outputs' / 'mlflow.db'}", "vqi-debug")
    assert found and all(c in path.parents for path in found.values())
    client = MlflowClient(f"sqlite:///{c / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vqi-debug").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.info.artifact_uri.startswith((c / "outputs").as_uri()) for r in runs)
