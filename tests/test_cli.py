"""The command line explains itself: `--help` lists the stages and the app's config groups (not
its internal files), `--version` is vqi's own, and tab completion offers the stages after
`stage=`. Each runs `python -m vqi.run` (what the `vqi` console script calls) in a subprocess."""
from __future__ import annotations

import subprocess
import sys

from cli_factory import cli_env

import vqi
from vqi.stages import STAGES


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vqi.run", *args], env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_version_is_vqis_own():
    assert _cli("--version").stdout.strip() == f"vqi {vqi.__version__}"


def test_completion_offers_the_stages_after_stage_equals():
    """Through Hydra's bash completion, as the script `vqi -sc install=bash` installs calls it."""
    offered = _cli("-sc", "query=bash", COMP_LINE="vqi stage=").stdout.split()
    assert sorted(offered) == sorted(f"stage={name}" for name in [*STAGES, "all"])
