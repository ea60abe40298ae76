"""Shared fixtures: config composition against tmp folders, and the CLI as a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cli_factory import cli_env

from vqi import PROJECT_ROOT
from vqi.config import CONFIG_DIR, register_resolvers, register_stage_group

SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "ttpla-sample"


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Tests run from their tmp folder, so nothing (e.g. an MLflow `mlruns/`) lands in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tmp_paths(tmp_path: Path) -> list[str]:
    """Overrides that send every read and write of a run into `tmp_path`."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'outputs'}"]


@pytest.fixture
def make_cfg(tmp_paths):
    """Compose the app's config as `python -m vqi.run` would, with paths in tmp."""
    register_resolvers()
    register_stage_group()

    def _compose(*overrides: str, stage: str = "all") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("config", overrides=[f"stage={stage}", *tmp_paths, *overrides])

    return _compose


@pytest.fixture
def run_cli(tmp_paths, tmp_path):
    """Run `python -m vqi.run` (this checkout's) in a subprocess from an unrelated working directory."""

    def _run(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        env = cli_env(HYDRA_FULL_ERROR="1")
        proc = subprocess.run(
            [sys.executable, "-m", "vqi.run", *args, *tmp_paths],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"vqi.run {' '.join(args)} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    return _run


@pytest.fixture(autouse=True)
def _no_mlflow_run_left_active():
    """A test (or the code it runs) must end every MLflow run it starts."""
    import mlflow
    yield
    leaked = mlflow.active_run()
    while mlflow.active_run():
        mlflow.end_run()
    assert leaked is None, f"MLflow run {leaked.info.run_id} was left active"
