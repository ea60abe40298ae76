"""The one entry point: `python -m vqi.run stage=<name> [overrides]`.

It composes the config, opens one MLflow run per stage, calls the stage, and closes the run
(FAILED if the stage raised). `stage=all` runs every registered stage in order. SIGTERM or
SIGHUP stops it cleanly: the open run ends KILLED, temporary files go, the exit status is 128+N.
Runs are tagged with host and pid; runs whose process died unannounced (kill -9) are closed as
KILLED by the next invocation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import hydra
import mlflow
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vqi import config as vqi_config
from vqi import tracking
from vqi.data.prepared import current_fingerprint
from vqi.stages import PER_METHOD, PIPELINE, UnknownStageError, load_stage
from vqi.utils.owner import Owner
from vqi.utils.stopping import Stopped, stop_on_signals

log = logging.getLogger("vqi")


def _tags(cfg: DictConfig, stage: str) -> dict[str, str]:
    tags = {
        "stage": stage,
        "git_commit": tracking.git_commit(),
        "experiment_name": str(cfg.experiment_name),
        **Owner.me().tags(),  # a later run closes this one if the process dies unannounced
    }
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["sweep_id"] = Path(hydra_cfg.sweep.dir).name
        tags["sweep_job"] = str(hydra_cfg.job.num)
    return tags


def _reuse_key(cfg: DictConfig, module) -> str | None:
    """For a stage that lists its input files (`inputs(cfg)`): a hash of its config and of those
    files' sizes and times. A finished run with the same key makes a rerun unnecessary."""
    if not hasattr(module, "inputs"):
        return None
    config = OmegaConf.to_container(cfg, resolve=True)
    for volatile in ("stage", "force", "until"):  # how a run was asked for, not what it makes
        config.pop(volatile, None)
    files = sorted(f for p in map(Path, module.inputs(cfg))
                   for f in ([p] if not p.is_dir() else p.rglob("*")) if f.is_file())
    signature = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    blob = json.dumps([config, current_fingerprint(Path(cfg.data.processed_dir)), signature], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _rank() -> int:
    """The process's rank under `torchrun` (env RANK); 0 for a plain run."""
    return int(os.environ.get("RANK", "0"))


def run_stage(cfg: DictConfig, stage: str, experiment_id: str) -> dict[str, float]:
    """Run one stage inside its own MLflow run and return its metrics."""
    module = load_stage(stage)
    if _rank() != 0:  # under torchrun only rank 0 tracks; the others just run the stage
        return module.run(cfg) or {}
    name = module.run_name(cfg) if hasattr(module, "run_name") else f"{stage}-{cfg.experiment_name}"
    key = _reuse_key(cfg, module)
    if key and not cfg.force:
        done = tracking.find_finished_run(experiment_id, stage, key)
        if done is not None:
            log.info("stage %s: reusing run %s (%s): same config and inputs; force=true redoes it",
                     stage, done.info.run_name, done.info.run_id)
            return dict(done.data.metrics)
    resume = module.resume_run_id(cfg) if hasattr(module, "resume_run_id") else None
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    tags = {**_tags(cfg, stage), **({"reuse_key": key} if key else {})}
    log.info("stage %s: MLflow run %s%s", stage, name, f" (resuming {resume})" if resume else "")
    with tracking.stage_run(experiment_id, name, tags, params, resume) as active:
        tracking.log_dir_if_exists(Path(HydraConfig.get().runtime.output_dir) / ".hydra", ".hydra")
        metrics = module.run(cfg) or {}
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if numeric:
            mlflow.log_metrics(numeric)
        fingerprint = current_fingerprint(Path(cfg.data.processed_dir))
        if fingerprint:
            mlflow.set_tag("dataset_fingerprint", fingerprint)
        log.info("stage %s finished (run id %s)", stage, active.info.run_id)
    return metrics


def _jobs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """(stage, config) pairs to run: one for a named stage, the whole pipeline for `all`.

    `until=<stage>` ends `all` after that stage's first step. In `all`, a per-method stage is
    composed again with `xai=<method>` for every method of `xai_methods`, keeping the command
    line's own overrides.
    """
    if cfg.stage != "all":
        load_stage(cfg.stage)  # fail on an unknown name before any run is opened
        return [(cfg.stage, cfg)]
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("stage=")]
    steps = list(PIPELINE)
    if cfg.until:
        if cfg.until not in steps:
            raise UnknownStageError(f"until={cfg.until!r} is not a pipeline step; steps: {', '.join(steps)}")
        steps = steps[:steps.index(cfg.until) + 1]
    jobs = []
    for stage in steps:
        if stage in PER_METHOD:
            for method in cfg.xai_methods:
                jobs.append((stage, compose(config_name="config",
                                            overrides=[*overrides, f"stage={stage}", f"xai={method}"])))
        else:
            jobs.append((stage, cfg))
    return jobs


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        with stop_on_signals():
            jobs = _jobs(cfg)
            experiment_id = (tracking.configure(cfg.tracking.uri, cfg.tracking.experiment,
                                                cfg.tracking.artifact_location) if _rank() == 0 else "")
            if experiment_id:
                tracking.close_stale_runs(experiment_id)
            for stage, job_cfg in jobs:
                run_stage(job_cfg, stage, experiment_id)
    except Stopped as stop:  # the runs are ended (KILLED) and temporary files removed by now
        log.error("%s: exiting with status %d", stop, stop.exit_code)
        raise SystemExit(stop.exit_code) from None


vqi_config.register_resolvers()

if __name__ == "__main__":
    main()
