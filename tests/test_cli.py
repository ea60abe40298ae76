"""The command line explains itself: `--help` lists the stages and the app's config groups (not
its internal files), `--version` is vqi's own, and tab completion offers the stages after
`stage=`. Each runs `python -m vqi.run` (what the `vqi` console script calls) in a subprocess."""
from __future__ import annotations

import subprocess
import sys

from cli_factory import cli_env

import vqi
from vqi.config import CONFIG_DIR
from vqi.stages import STAGES

NOT_APP_FOLDERS = ("hydra", "ranker", "study")
"""conf/ folders that are no group of the app (README, "Configuration"): Hydra's own, the rankers
and the study's arms and protocols."""


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vqi.run", *args], env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _section(text: str, title: str) -> list[str]:
    """The lines of the help's `== title ... ==` section, up to the blank line that ends it."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    end = lines.index("", start)
    return [line.strip() for line in lines[start + 1:end]]


def _rows(text: str, title: str) -> dict[str, str]:
    """A section whose lines are `name  text`, as {name: text}."""
    return {name: rest.strip() for name, _, rest in (line.partition(" ") for line in _section(text, title))}


def _app_groups() -> dict[str, list[str]]:
    """Every conf/ folder of the app with its options, internal `_` files left out."""
    groups: dict[str, list[str]] = {}
    for file in sorted(CONFIG_DIR.rglob("*.yaml")):
        group = file.parent.relative_to(CONFIG_DIR).as_posix()
        if group != "." and not group.startswith(NOT_APP_FOLDERS) and not file.stem.startswith("_"):
            groups.setdefault(group, []).append(file.stem)
    return groups


def test_help_lists_every_stage_and_each_app_group_with_its_options():
    help_text = _cli("--help").stdout
    stages = _rows(help_text, "Stages")
    assert list(stages) == [*STAGES, "all"] and all(stages.values()), stages
    assert "prepare, train, test, explain, evaluate" in stages["all"]
    groups = _rows(help_text, "Config groups")
    assert {g: sorted(o.rstrip("*") for o in opts.split(", ")) for g, opts in groups.items()} == _app_groups()
    assert all(opts.count("*") == 1 for opts in groups.values()), groups   # the chosen option of each
    assert "lraspp_mobilenet_v3_large*" in groups["model"]                # the demo experiment's model
    assert "_common" not in help_text and "== Config ==" not in help_text  # no internal file, no config dump
    assert [line.split()[0] for line in _section(help_text, "Examples")] == ["vqi"] * 4


def test_version_is_vqis_own():
    assert _cli("--version").stdout.strip() == f"vqi {vqi.__version__}"


def test_completion_offers_the_stages_after_stage_equals():
    """Through Hydra's bash completion, as the script `vqi -sc install=bash` installs calls it."""
    offered = _cli("-sc", "query=bash", COMP_LINE="vqi stage=").stdout.split()
    assert sorted(offered) == sorted(f"stage={name}" for name in [*STAGES, "all"])
