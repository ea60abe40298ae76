"""Every config file composes, and paths never depend on the working directory."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vqi.config import CONFIG_DIR

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONFIG_DIR / group).glob("*.yaml"))
           if not f.stem.startswith("_")]  # `_name.yaml`: a partial that options include


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_file_composes_and_resolves(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["stage"] == "all"


def test_paths_are_absolute_and_follow_overrides(make_cfg, tmp_path):
    cfg = make_cfg()
    assert Path(cfg.paths.root_dir).is_absolute()
    assert cfg.paths.output_dir == str(tmp_path / "outputs")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'outputs'}/mlflow.db"


def test_unknown_stage_lists_the_valid_ones(run_cli):
    proc = run_cli("stage=bogus", check=False)
    assert proc.returncode != 0
    assert "unknown stage 'bogus'; valid stages: prepare" in proc.stderr


def test_unknown_stage_makes_no_run_folder(run_cli, tmp_path):
    proc = run_cli("stage=trian", check=False)
    assert proc.returncode == 2 and "unknown stage 'trian'" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_no_stage_says_so_plainly(run_cli, tmp_path):
    proc = run_cli(check=False)
    assert proc.returncode == 2 and "no stage given: python -m vqi.run stage=<name>" in proc.stderr
    assert "exception formatting" not in proc.stderr and not (tmp_path / "outputs").exists()
