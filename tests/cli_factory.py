"""The CLI as a subprocess that imports this checkout's `vqi` (not whichever one the venv
installed in editable mode), from an unrelated working directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vqi import PROJECT_ROOT


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m vqi.run` child: this checkout first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **extra}


def start_cli(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m vqi.run *args` started in `cwd`, stdout and stderr merged into one text pipe."""
    return subprocess.Popen([sys.executable, "-m", "vqi.run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=cli_env())
