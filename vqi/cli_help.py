"""The parts of `vqi --help` made from the code rather than written in `conf/hydra/help/vqi.yaml`:
one line per stage, from the stage registry and each stage module's docstring, and the app's
config groups with their options. The help template reads them through OmegaConf resolvers, so
the help stays Hydra's own (`hydra.help`) and `--hydra-help` is untouched."""
from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from vqi import __version__
from vqi.stages import PER_METHOD, PIPELINE, STAGES

_STAGE_PREFIX = re.compile(r"^(?:stage=\w+|Stage `\w+`):\s*")
"""How a stage module's docstring names its stage before saying what it does."""


def stage_summary(name: str) -> str:
    """The first paragraph of stage `name`'s module docstring, on one line. Read from the source,
    not imported: a stage imports torch, and help should not wait for it."""
    origin = importlib.util.find_spec(STAGES[name]).origin
    doc = ast.get_docstring(ast.parse(Path(origin).read_text(encoding="utf-8"))) or ""
    return _STAGE_PREFIX.sub("", " ".join(doc.split("\n\n", 1)[0].split()))


def stage_lines() -> str:
    """Every registered stage and `all`, one line each."""
    summaries = {name: stage_summary(name) for name in STAGES}
    per_method = [step for step in dict.fromkeys(PIPELINE) if step in PER_METHOD]
    summaries["all"] = (f"every step in order, each its own run: {', '.join(PIPELINE)}; "
                        f"{' and '.join(per_method)} once per method of xai_methods; "
                        "until=<step> stops after that step")
    width = max(map(len, summaries))
    return "\n".join(f"  {name:<{width}}  {text}" for name, text in summaries.items())


def _is_app_group(group: str) -> bool:
    """A group the user picks options of: not Hydra's own, and not `stage` (listed apart)."""
    return group not in ("hydra", "stage") and not group.startswith("hydra/")


def group_lines(choices: Mapping[str, str | None], options: Callable[[str], list[str]]) -> str:
    """One line per app group in `choices` (group -> chosen option, as the composed defaults list
    has them, so conf folders that no default names, e.g. `conf/ranker/`, are not groups here):
    its options from `options(group)` without internal files (`_` first, e.g. `xai/_common`),
    the chosen one marked `*`."""
    groups = sorted(g for g in choices if _is_app_group(g))
    width = max(map(len, groups), default=0)
    lines = []
    for group in groups:
        names = [n + ("*" if n == choices[group] else "") for n in sorted(options(group)) if not n.startswith("_")]
        lines.append(f"  {group:<{width}}  {', '.join(names)}")
    return "\n".join(lines)


def _running_app_groups() -> str:
    """`group_lines` of the config Hydra composed for this `--help` (its overrides applied)."""
    loader = GlobalHydra.instance().config_loader()
    return group_lines(HydraConfig.get().runtime.choices, loader.get_group_options)


def register_help_resolvers() -> None:
    """`${vqi_version:}`, `${vqi_help_stages:}` and `${vqi_help_groups:}` for the help template."""
    for name, resolver in (("vqi_version", lambda: __version__), ("vqi_help_stages", stage_lines),
                           ("vqi_help_groups", _running_app_groups)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
