"""The wheel: built from a copy of the checkout, installed outside it, `vqi stage=prepare` run
from an empty folder finds its packaged config and writes data/ and outputs/ there."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vqi import PROJECT_ROOT

TOP_LEVEL_SKIP = {".git", ".venv", "outputs", "data", "build", "dist", ".pytest_cache"}


def _skip(folder: str, names: list[str]) -> set[str]:
    """What not to copy: the checkout's own outputs and environments (top level only: vqi/data is code)."""
    top = {n for n in names if n in TOP_LEVEL_SKIP} if Path(folder) == PROJECT_ROOT else set()
    return top | {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}


@pytest.mark.slow
def test_wheel_runs_prepare_from_an_empty_folder(tmp_path):
    source = shutil.copytree(PROJECT_ROOT, tmp_path / "src", ignore=_skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("vqi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vqi/conf/config.yaml" in names and "vqi/conf/hydra/default.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    work = tmp_path / "empty"
    work.mkdir()
    # the installed copy only: deps from this interpreter, nothing of the checkout on the path
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(site / "bin" / "vqi"), "stage=prepare", "data.generator.num_images=4",
                           "data.generator.size=64", "data.preview_images=0"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    where = subprocess.run([sys.executable, "-c", "import vqi.run, vqi.data.prepared as p; print(p.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120).stdout
    assert where.startswith(str(site / "vqi")), where
    assert (work / "data" / "processed" / "synthetic-seed42-n4-s64-noise-w0.3-1-o1-m0.1-160" / "fingerprint.txt").is_file()
    client = MlflowClient(f"sqlite:///{work / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("vqi-demo").experiment_id])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith((work / "outputs").as_uri())
