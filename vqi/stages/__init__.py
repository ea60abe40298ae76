"""The stage registry: name -> module, in pipeline order.

A stage module defines `run(cfg) -> dict[str, float]` and may define
`run_name(cfg) -> str` (the MLflow run name), `resume_run_id(cfg) -> str | None`
(an MLflow run to continue, e.g. after an interrupted training) and
`pipeline_stop(cfg, metrics) -> str | None` (why `stage=all` must end after this step, given
the metrics it returned: e.g. a report that chose no method).
"""
from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, str] = {
    "prepare": "vqi.stages.prepare",
    "train": "vqi.stages.train",
    "test": "vqi.stages.test",
    "explain": "vqi.stages.explain",
    "evaluate": "vqi.stages.evaluate",
    "sanity": "vqi.stages.sanity",
    "report": "vqi.stages.report",
    "augment": "vqi.stages.augment",
    "budget": "vqi.stages.budget",
    "retrain": "vqi.stages.retrain",
    "compare": "vqi.stages.compare",
    "serve": "vqi.stages.serve",
    "export": "vqi.stages.export",
    "export_proposals": "vqi.stages.export_proposals",
    "import_decisions": "vqi.stages.import_decisions",
}
"""Every stage by name."""

PIPELINE: tuple[str, ...] = ("prepare", "train", "test", "explain", "evaluate", "report",
                              "augment", "retrain", "compare")
"""The steps `stage=all` runs, in order (a stage may appear more than once)."""

PER_METHOD: frozenset[str] = frozenset({"explain", "evaluate"})
"""Stages that `stage=all` runs once per entry of the config's `xai_methods` (as `xai=<method>`)."""


class UnknownStageError(ValueError):
    pass


def _unknown(name: str) -> UnknownStageError:
    return UnknownStageError(f"unknown stage {name!r}; valid stages: {', '.join([*STAGES, 'all'])}")


def check_stage(name: str) -> None:
    """Raise `UnknownStageError`, listing the valid names, unless `name` is a stage or `all`."""
    if not isinstance(name, str) or (name not in STAGES and name != "all"):
        raise _unknown(name)


def load_stage(name: str) -> ModuleType:
    if name not in STAGES:
        raise _unknown(name)
    return importlib.import_module(STAGES[name])
