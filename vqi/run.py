"""The one entry point: `python -m vqi.run stage=<name> [overrides]`.

It composes the config, opens one MLflow run per stage, calls the stage, and closes the run
(FAILED if the stage raised). `stage=all` runs every pipeline step in order, each in a run of
its own with its own composed config, nested in one parent run of the invocation. SIGTERM or
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
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import NamedTuple

import hydra
import mlflow
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import QuotedString, ValueType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vqi import __version__
from vqi import config as vqi_config
from vqi import tracking
from vqi.cli_help import register_help_resolvers
from vqi.data.prepared import current_fingerprint
from vqi.models import sparse_conv
from vqi.stages import PER_METHOD, PIPELINE, STAGES, UnknownStageError, check_stage, load_stage
from vqi.utils.logs import quiet_third_party_logs
from vqi.utils.owner import Owner
from vqi.utils.stopping import Stopped, stop_on_signals
from vqi.xai.catalogue import own_model_methods

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


def _file_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _reuse_key(cfg: DictConfig, module) -> str | None:
    """For a stage that lists its input files (`inputs(cfg)`): a hash of its config and of those
    files' contents, with the checkout's folders as placeholders (so a moved or copied checkout
    reuses its runs). A finished run with the same key makes a rerun unnecessary."""
    if not hasattr(module, "inputs"):
        return None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    files = sorted(f for p in map(Path, module.inputs(cfg))
                   for f in ([p] if not p.is_dir() else p.rglob("*")) if f.is_file())
    config = vqi_config.relocatable({**resolved, "inputs": [str(f) for f in files]})
    for volatile in ("stage", "force", "until"):  # how a run was asked for, not what it makes
        config.pop(volatile, None)
    signature = [(f.stat().st_size, _file_hash(f)) for f in files]
    blob = json.dumps([config, current_fingerprint(Path(cfg.data.processed_dir)), signature], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _rank() -> int:
    """The process's rank under `torchrun` (env RANK); 0 for a plain run."""
    return int(os.environ.get("RANK", "0"))


class Job(NamedTuple):
    """One stage to run, with the config it runs with and the overrides that composed it."""
    stage: str
    cfg: DictConfig
    overrides: list[str]
    composed: bool = False  # composed here (a step of `all`), not the invocation's own config


def _log_config(job: Job) -> None:
    """Log the config this stage ran with as `.hydra/`: `config.yaml` and `overrides.yaml` of
    the job itself (a step of `all` records its own stage and method, not the outer config),
    and Hydra's `hydra.yaml` for the invocation's own config."""
    hydra_dir = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(job.cfg), encoding="utf-8")
        (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(job.overrides))),
                                               encoding="utf-8")
        if not job.composed and (hydra_dir / "hydra.yaml").is_file():
            shutil.copyfile(hydra_dir / "hydra.yaml", folder / "hydra.yaml")
        mlflow.log_artifacts(str(folder), artifact_path=".hydra")


def _run_module(module, cfg: DictConfig) -> dict[str, float]:
    """`module.run(cfg)`, with the tap-sparse convolutions of explaining and deletion switched
    on only where `train.tap_sparse` says so (vqi.models.sparse_conv.enabled)."""
    with sparse_conv.enabled(bool(OmegaConf.select(cfg, "train.tap_sparse", default=False))):
        return module.run(cfg) or {}


def run_stage(job: Job, experiment_id: str, pipeline_id: str = "") -> dict[str, float]:
    """Run one stage inside its own MLflow run (nested in the active one, if any) and return
    its metrics."""
    cfg, stage = job.cfg, job.stage
    module = load_stage(stage)
    if _rank() != 0:  # under torchrun only rank 0 tracks; the others just run the stage
        return _run_module(module, cfg)
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
    tags = {**_tags(cfg, stage), **({"reuse_key": key} if key else {}),
            **({"pipeline_id": pipeline_id} if pipeline_id else {})}
    parent = mlflow.active_run()
    if parent is not None and resume:  # a resumed run moves under this invocation's parent
        tags["mlflow.parentRunId"] = parent.info.run_id
    log.info("stage %s: MLflow run %s%s", stage, name, f" (resuming {resume})" if resume else "")
    with tracking.stage_run(experiment_id, name, tags, params, resume) as active:
        _log_config(job)
        metrics = _run_module(module, cfg)
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if numeric:
            mlflow.log_metrics(numeric)
        fingerprint = current_fingerprint(Path(cfg.data.processed_dir))
        if fingerprint:
            mlflow.set_tag("dataset_fingerprint", fingerprint)
        log.info("stage %s finished (run id %s)", stage, active.info.run_id)
    return metrics


def _compose(stage: str, overrides: list[str]) -> Job:
    """A step of `stage=all` (or a split `stage=sanity`): its config composed with `stage=<stage>`."""
    job_overrides = [*overrides, f"stage={stage}"]
    return Job(stage, compose(config_name="config", overrides=job_overrides), job_overrides, True)


def _sanity_jobs(cfg: DictConfig, task: list[str]) -> list[Job]:
    """`stage=sanity` checks every method of `sanity.methods` on one checkpoint; a method that
    explains a model of its own is checked on that model, in a run of its own (so the report
    finds it by that checkpoint's hash) that writes its own table, `sanity_<method>`."""
    own = own_model_methods(cfg.sanity.methods)
    if not own:
        return [Job(cfg.stage, cfg, task)]
    kept = [o for o in task if o.lstrip("+~").split("=", 1)[0] not in ("stage", "sanity.methods")]
    shared = [m for m in cfg.sanity.methods if m not in own]
    jobs = [_compose("sanity", [*kept, f"sanity.methods=[{','.join(shared)}]"])] if shared else []
    return jobs + [_compose("sanity", [*kept, *extra, f"xai={m}", f"sanity.methods=[{m}]", f"sanity.table=sanity_{m}"]) for m, extra in own.items()]


def _jobs(cfg: DictConfig) -> list[Job]:
    """The stages to run: one for a named stage, the whole pipeline for `all`.

    `until=<stage>` ends `all` after that stage's first step. In `all`, every step is composed
    again with `stage=<step>` (and a per-method step with `xai=<method>` for every method of
    `xai_methods`), keeping the command line's own overrides, so its run records its own config.
    A method that explains a model of its own (`xai.model_overrides`: IMPACTX) is left out of the
    per-method steps; after the report, its model is trained (teacher: the method the report
    chose), explained and evaluated under its overrides, and the report runs again to add its row.
    """
    task = list(HydraConfig.get().overrides.task)
    if cfg.stage == "sanity":
        return _sanity_jobs(cfg, task)
    if cfg.stage != "all":
        load_stage(cfg.stage)  # fail on an unknown name before any run is opened
        return [Job(cfg.stage, cfg, task)]
    overrides = [o for o in task if o.lstrip("+~").split("=", 1)[0] != "stage"]
    steps = list(PIPELINE)
    if cfg.until:
        if cfg.until not in steps:
            raise UnknownStageError(f"until={cfg.until!r} is not a pipeline step; steps: {', '.join(steps)}")
        steps = steps[:steps.index(cfg.until) + 1]
    own = own_model_methods(cfg.xai_methods)
    jobs = []
    for stage in steps:
        methods = [[f"xai={m}"] for m in cfg.xai_methods if m not in own] if stage in PER_METHOD else [[]]
        jobs += [_compose(stage, [*overrides, *extra]) for extra in methods]
        if stage == "report" and own:
            for method, extra in own.items():
                jobs.append(_compose("train", [*overrides, *extra]))
                jobs += [_compose(step, [*overrides, *extra, f"xai={method}"]) for step in PIPELINE if step in PER_METHOD]
            jobs.append(_compose("report", overrides))
    return jobs


class PipelineStopped(RuntimeError):
    """A step of `stage=all` finished but left nothing the next steps could use (its
    `pipeline_stop` said why): the chain ends there, with a non-zero exit."""


def _check_next(job: Job, metrics: dict[str, float], remaining: int) -> None:
    """Raise `PipelineStopped` when steps remain and `job`'s stage says they must not run."""
    module = load_stage(job.stage)
    why = module.pipeline_stop(job.cfg, metrics) if remaining and hasattr(module, "pipeline_stop") else None
    if why:
        raise PipelineStopped(f"stage=all stopped after {job.stage}: {why}")


def _run_pipeline(cfg: DictConfig, jobs: list[Job], experiment_id: str) -> None:
    """Run `jobs`; for `stage=all` inside one parent run that groups them (tag `pipeline_id`,
    the parent's id, on every run of the invocation). A step whose stage says the rest must not
    run (`pipeline_stop`) ends the chain with `PipelineStopped`."""
    if cfg.stage != "all" or not experiment_id:
        for i, job in enumerate(jobs):
            metrics = run_stage(job, experiment_id, uuid.uuid4().hex if experiment_id else "")
            _check_next(job, metrics, len(jobs) - i - 1)
        return
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    name = f"all-{cfg.experiment_name}" + (f"-until-{cfg.until}" if cfg.until else "")
    with tracking.stage_run(experiment_id, name, _tags(cfg, "all"), params) as parent:
        pipeline_id = parent.info.run_id
        mlflow.set_tag("pipeline_id", pipeline_id)
        _log_config(Job("all", cfg, list(HydraConfig.get().overrides.task)))
        for i, job in enumerate(jobs):
            metrics = run_stage(job, experiment_id, pipeline_id)
            _check_next(job, metrics, len(jobs) - i - 1)


@hydra.main(version_base="1.3", config_path=str(vqi_config.CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    vqi_config.check_config(cfg, list(HydraConfig.get().overrides.task))  # before any data is read
    try:
        with stop_on_signals():
            jobs = _jobs(cfg)
            experiment_id = (tracking.configure(cfg.tracking.uri, cfg.tracking.experiment,
                                                cfg.tracking.artifact_location) if _rank() == 0 else "")
            if experiment_id:
                tracking.close_stale_runs(experiment_id)
            _run_pipeline(cfg, jobs, experiment_id)
    except Stopped as stop:  # the runs are ended (KILLED) and temporary files removed by now
        log.error("%s: exiting with status %d", stop, stop.exit_code)
        raise SystemExit(stop.exit_code) from None
    except PipelineStopped as stop:  # the parent run is ended (FAILED, with the reason) by now
        log.error("%s", stop)
        raise SystemExit(1) from None


_NO_STAGE_NEEDED = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
                    "--shell-completion", "-sc", "--config-name", "-cn", "--config-dir", "-cd"}
"""Hydra flags that print something, or point at another config, without running a stage."""


def stage_argument_error(argv: list[str]) -> str | None:
    """Why the command line cannot run: no `stage=`, or a stage name that does not exist.

    Checked before Hydra starts, which would otherwise make the run folder
    `outputs/runs/${stage}/...` first: for a typo, for `../x` (outside `runs/`), for `tr*ain` or
    for an empty name (or, with no stage at all, fail while formatting its own error). Values are
    read with Hydra's own override parser, so a comma list or `choice(...)` sweep is checked name
    by name, as Hydra will run it; other sweeps (`glob`, `range`, `interval`) name no stage.
    """
    if any(arg.split("=", 1)[0] in _NO_STAGE_NEEDED for arg in argv):
        return None
    valid = f"stages: {', '.join([*STAGES, 'all'])}"
    parser = OverridesParser.create()
    given = False
    for arg in argv:
        if arg.lstrip("+~").split("=", 1)[0] != "stage" or "=" not in arg:
            continue
        given = True
        try:
            override = parser.parse_override(arg)
        except Exception as err:  # Hydra's parser raises its own exception types
            return f"cannot read {arg!r}: {err}; valid {valid}"
        if not override.is_sweep_override():
            names = [override.value()]
        elif override.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
            names = [v.text if isinstance(v, QuotedString) else v for v in override.value().list]
        else:
            return f"{arg!r}: stage takes a name or a comma-separated list of names; valid {valid}"
        for name in names:
            try:
                check_stage(name)
            except UnknownStageError as err:
                return str(err)
    if not given:
        return f"no stage given: python -m vqi.run stage=<name> [overrides]; {valid}"
    return None


def cli() -> None:
    """The command line: `--version` answers with vqi's own (Hydra's would answer with Hydra's),
    otherwise check the stage argument, then run the Hydra app."""
    if "--version" in sys.argv[1:]:
        print(f"vqi {__version__}")
        return
    error = stage_argument_error(sys.argv[1:])
    if error:
        print(f"vqi: {error}", file=sys.stderr)
        raise SystemExit(2)
    main()


vqi_config.register_resolvers()
vqi_config.register_stage_group()
register_help_resolvers()
quiet_third_party_logs()  # before any stage imports matplotlib or starts a server

if __name__ == "__main__":
    cli()
