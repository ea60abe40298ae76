"""Stopping runs: SIGTERM ends the MLflow run KILLED with its reason, removes temporary files
and exits non-zero; real subprocesses and a real SQLite store."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from cli_factory import start_cli
from mlflow.tracking import MlflowClient

GENERATED = ["data.generator.num_images=300", "data.generator.size=64"]   # enough to catch prepare mid-build
PROCESSED = "synthetic-seed42-n300-s64-noise-*-160"                         # their folder: the demo's noise
TMP_GLOB = f".{PROCESSED}.tmp-*"


def _start(tmp_path: Path, tmp_paths: list[str], *args: str) -> subprocess.Popen:
    return start_cli(tmp_path, *args, *tmp_paths)


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {what}:\n{proc.stdout.read()[-4000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def runs(tmp_path: Path, stage: str | None = None):
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vqi-demo")
    return client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'" if stage else "")


def start_prepare(tmp_path: Path, tmp_paths: list[str], *extra: str) -> subprocess.Popen:
    """`stage=prepare` on enough tiny generated images to catch it mid-build; returns once its
    temporary sibling of the prepared folder exists."""
    proc = _start(tmp_path, tmp_paths, "stage=prepare", *GENERATED, "data.preview_images=0", *extra)
    processed = tmp_path / "data" / "processed"
    _wait_for(lambda: any(processed.glob(TMP_GLOB)), proc, "the prepared folder's temporary sibling")
    return proc


def test_sigterm_during_prepare_kills_the_run_and_removes_its_temporary_folder(tmp_path, tmp_paths):
    proc = start_prepare(tmp_path, tmp_paths)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped by SIGTERM" in out
    assert not list((tmp_path / "data" / "processed").glob(f".{PROCESSED}.*"))
    (run,) = runs(tmp_path, "prepare")
    assert run.info.status == "KILLED" and run.data.tags["end_reason"] == "stopped by SIGTERM"


def test_sigterm_stops_serve_with_its_run_killed(tmp_path, tmp_paths):
    proc = _start(tmp_path, tmp_paths, "stage=serve", "serve.port=0", "serve.discover=false")
    lines: list[str] = []

    def serving() -> bool:
        lines.append(proc.stdout.readline())
        return lines[-1].startswith("serving on ")

    _wait_for(serving, proc, "the server")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + out[-3000:]
    (run,) = runs(tmp_path, "serve")
    assert run.info.status == "KILLED" and run.data.tags["end_reason"] == "stopped by SIGTERM"


def test_a_later_run_closes_runs_and_removes_folders_of_a_process_killed_with_sigkill(tmp_path, tmp_paths):
    proc = start_prepare(tmp_path, tmp_paths)
    proc.kill()
    proc.communicate(timeout=60)
    processed = tmp_path / "data" / "processed"
    (left,) = processed.glob(TMP_GLOB)
    (killed,) = runs(tmp_path, "prepare")
    assert killed.info.status == "RUNNING" and killed.data.tags["pid"] == str(proc.pid)
    later = start_cli(tmp_path, "stage=prepare", *GENERATED, "data.preview_images=0", *tmp_paths)   # same folder
    out = later.communicate(timeout=300)[0]
    assert later.returncode == 0, out[-3000:]
    assert not left.exists() and not list(processed.glob(f".{PROCESSED}.*"))
    status = {r.info.run_id: r for r in runs(tmp_path, "prepare")}
    assert status[killed.info.run_id].info.status == "KILLED"
    assert f"process {proc.pid} on " in status[killed.info.run_id].data.tags["end_reason"]
    assert sorted(r.info.status for r in status.values()) == ["FINISHED", "KILLED"]


def test_runs_and_folders_of_live_processes_or_other_hosts_are_kept(tmp_path):
    import mlflow

    from vqi import tracking
    from vqi.data import prepared
    from vqi.utils.owner import Owner

    experiment = tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "vqi")
    me, elsewhere = Owner.me(), Owner("another-host.invalid", 1, "1")
    ids = []
    for owner in (me, elsewhere):
        run = mlflow.MlflowClient().create_run(experiment, tags=owner.tags())
        ids.append(run.info.run_id)
    assert tracking.close_stale_runs(experiment) == []
    out = tmp_path / "prepared"
    for owner in (me, elsewhere):
        (tmp_path / f".prepared.tmp-{owner.token()}-abc123").mkdir()
    assert prepared.remove_stale_siblings(out) == []
    for run_id in ids:
        mlflow.MlflowClient().set_terminated(run_id)


def test_a_resumed_run_keeps_why_it_stopped_as_resumed_after(tmp_path):
    import mlflow

    from vqi import tracking

    experiment = tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", "vqi")
    first = mlflow.MlflowClient().create_run(experiment, tags={"end_reason": "stopped by SIGTERM"})
    mlflow.MlflowClient().set_terminated(first.info.run_id, "KILLED")
    with tracking.stage_run(experiment, "train", {"stage": "train"}, {}, first.info.run_id):
        pass
    run = mlflow.MlflowClient().get_run(first.info.run_id)
    assert run.info.status == "FINISHED" and "end_reason" not in run.data.tags
    assert run.data.tags["resumed_after"] == "stopped by SIGTERM"


def test_the_next_prepare_and_train_remove_what_writers_killed_with_sigkill_left(make_cfg, tmp_path):
    """`kill -9` mid-generation leaves the generator's `.synthetic-….tmp-*` (a whole dataset) in
    data/raw, mid-checkpoint `.last.pt.tmp-<owner>-<hex>.pt` (older versions: `.last.pt.<hex>.tmp.pt`);
    the next prepare and train runs remove them, and keep a live process's and other names."""
    import os

    import mlflow

    from vqi import tracking
    from vqi.stages import prepare, train
    from vqi.utils.owner import Owner

    cfg = make_cfg("experiment=debug", "train.val_split=null", "train.transforms.train.crop=32",
                   "tracking.register_models=false", stage="train")
    raw, ckpt_dir = Path(cfg.data.labels_dir), Path(cfg.train.checkpoint_dir)
    before = time.time() - 3600                                     # the killed run: before this process
    dead, live = Owner(Owner.me().host, 999_999_999, "0").token(), Owner.me().token()
    raw.parent.mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    left = [raw.parent / f".{raw.name}.tmp-x1y2z3", ckpt_dir / f".last.pt.tmp-{dead}-0123456789ab.pt",
            ckpt_dir / ".best.pt.0123456789ab.tmp.pt"]
    kept = [raw.parent / ".field-notes.tmp-mine", ckpt_dir / f".last.pt.tmp-{live}-0123456789ab.pt"]
    for path in left + kept:
        path.mkdir() if path.parent == raw.parent else path.write_bytes(b"part of a checkpoint")
        os.utime(path, (before, before))
    experiment = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    for module in (prepare, train):
        with mlflow.start_run(experiment_id=experiment):
            module.run(cfg)
    assert (ckpt_dir / "last.pt").is_file() and raw.is_dir()
    assert [p for p in left if p.exists()] == [] and all(p.exists() for p in kept)
