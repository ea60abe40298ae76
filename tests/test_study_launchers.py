"""The known-truth study's seeds as Hydra jobs (`python -m vqi.study.sweep`): two tiny seeds in
parallel through the joblib launcher and through submitit's local executor, resumed by a rerun
and by `python -m vqi.study arms`; the locked append of results.jsonl and the per-seed skip."""
from __future__ import annotations

import fcntl
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from test_study import ENV, protocol, study
from vqi import PROJECT_ROOT
from vqi.study.arm_study import RESULTS, run_seed, start_study
from vqi.study.records import append_record, load_records
from vqi.study.sweep import SWEEP_CONFIG_DIR

RECORD_KEYS = {"seed", "arm", "metrics", "seconds"}


def sweep(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "vqi.study.sweep", "-m", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=PROJECT_ROOT)


def launch_args(tmp_path: Path, arms: list[str], launcher: str, *extra: str) -> list[str]:
    return [f"protocol={protocol(tmp_path, arms)}", "study_seed=1,2", f"output_dir={tmp_path / 'study'}",
            f"tables_dir={tmp_path / 'tables'}", "name=tiny", f"hydra/launcher={launcher}", *extra]


def stage_logs(folder: Path) -> dict[str, int]:
    """Every stage log of the study with its size: a rerun that runs a stage appends to one."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.glob("seed*/logs/*.log"))}


@pytest.mark.slow
def test_two_seeds_as_parallel_joblib_jobs_resume_like_the_plain_loop(tmp_path):
    args = launch_args(tmp_path, ["original", "truth"], "joblib", "hydra.launcher.n_jobs=2")
    done = sweep(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "study"
    records = load_records(folder / RESULTS)
    assert sorted((r["seed"], r["arm"]) for r in records) == [(1, "original"), (1, "truth"), (2, "original"), (2, "truth")]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert all({"truth/iou_cable", "label_iou_cable"} <= set(r["metrics"]) for r in records if r["arm"] == "original")
    assert "Upper bound: trained on truth" in (tmp_path / "tables" / "tiny.md").read_text()   # the callback's table
    logs = stage_logs(folder)
    assert set(logs) == {f"seed{s}/logs/{n}.log" for s in (1, 2) for n in ("baseline", "truth")}
    again = sweep(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    plain = study("arms", "--protocol", str(tmp_path / "tiny.yaml"), "--output-dir", str(folder),
                  "--tables-dir", str(tmp_path / "tables"), "--name", "tiny")
    assert plain.returncode == 0 and "arm " not in plain.stdout, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert load_records(folder / RESULTS) == records and stage_logs(folder) == logs   # nothing ran again


@pytest.mark.slow
def test_two_seeds_through_submitits_local_executor_each_with_its_own_store(tmp_path):
    done = sweep(*launch_args(tmp_path, ["original"], "submitit_local"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "study"
    records = load_records(folder / RESULTS)
    assert sorted((r["seed"], r["arm"]) for r in records) == [(1, "original"), (2, "original")]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert all((folder / f"seed{s}" / "mlflow.db").is_file() for s in (1, 2))   # no SQLite file shared by jobs
    assert list((folder / "launches").glob("*/.submitit/*"))                   # run by submitit, not in-process


def test_an_append_waits_for_another_jobs_lock(tmp_path):
    path = tmp_path / RESULTS
    append_record(path, {"seed": 1, "arm": "original"})
    size = path.stat().st_size
    long_record = {"seed": 2, "arm": "original", "metrics": {"pad": "x" * 200_000}}
    with open(path, "a") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)                         # another job appending
        child = multiprocessing.get_context("fork").Process(target=append_record, args=(path, long_record))
        child.start()
        child.join(1.0)
        assert child.is_alive() and path.stat().st_size == size   # no read here: closing it would drop the lock
        fcntl.lockf(held, fcntl.LOCK_UN)
    child.join(30)
    assert child.exitcode == 0
    assert load_records(path) == [{"seed": 1, "arm": "original"}, long_record]


def test_a_seed_runs_only_when_one_of_its_arms_is_not_finished(tmp_path):
    spec = {"seeds": [1, 2], "arms": ["original", "truth"], "overrides": [], "settings": {}}
    arms = start_study(spec, tmp_path)
    for seed, arm in [(1, "original"), (1, "truth"), (2, "original")]:
        append_record(tmp_path / RESULTS, {"seed": seed, "arm": arm, "metrics": {}, "seconds": 0})
    for seed in (1, 2):                       # a file where a seed's folder goes: its first stage fails at once
        (tmp_path / f"seed{seed}").write_text("")
    assert run_seed(spec, arms, 1, tmp_path) == []
    with pytest.raises(NotADirectoryError):
        run_seed(spec, arms, 2, tmp_path)


def test_the_shipped_slurm_launcher_extends_submitits(tmp_path):
    with initialize_config_dir(config_dir=str(SWEEP_CONFIG_DIR), version_base="1.3"):
        cfg = compose("seeds", ["protocol=conf/study/development.yaml", "study_seed=1", "hydra/launcher=slurm",
                                "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.cpus_per_task == 8 and cfg.hydra.job.env_set.OMP_NUM_THREADS == "1"
    assert cfg.output_dir == str(PROJECT_ROOT / "outputs" / "study-development") and cfg.name == "study_development"
