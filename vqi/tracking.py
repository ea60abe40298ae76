"""MLflow plumbing for stages: store set-up, run lifecycle, tags, params, Hydra artifacts.

Only `vqi.run` and stage modules import this; library code stays free of MLflow.
"""
from __future__ import annotations

import logging
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import mlflow
from mlflow.tracking import MlflowClient

from vqi import PROJECT_ROOT
from vqi.utils.owner import Owner
from vqi.utils.stopping import Stopped

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 500

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, evaluations);
`custom_model_development` ("Machine learning") opens it on its runs, where this project logs."""


EARLIER_TAG = "vqi.earlier_experiments"
"""On an experiment that took over from another when its local store moved: the ids of the
experiments it continues, newest first, comma-separated (see `configure`, `lineage`)."""


def configure(uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Point MLflow at `uri` (creating a SQLite file's folder) and return the experiment id.

    The experiment is tagged as a model-training one (`EXPERIMENT_KIND`), so the UI opens on runs.

    A new experiment stores its artifacts at `artifact_location` (an absolute folder for a
    local store; None lets a tracking server decide) rather than in the working directory.
    MLflow records that folder, and each run's, as absolute paths and has no call to change
    them, so a local store that was moved or copied with its checkout (its experiment's artifact
    folder is elsewhere) would go on writing into the original's folder. Such an experiment is
    renamed `<experiment> (earlier location #<id>)` and a new `experiment` at `artifact_location`
    continues it: its tag `EARLIER_TAG` lists the earlier ones, whose finished runs `lineage`
    keeps in reach. Their artifacts stay where MLflow recorded them: readable while the original
    folder exists (a copy), not after a move.
    """
    folder = store_folder(uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    location = Path(artifact_location).resolve().as_uri() if artifact_location else None
    found = client.get_experiment_by_name(experiment)
    earlier: list[str] = []
    if found and location and folder is not None and _moved(found.artifact_location, location):
        earlier = lineage(found.experiment_id, client)
        client.rename_experiment(found.experiment_id, f"{experiment} (earlier location #{found.experiment_id})")
        log.warning("tracking store moved: experiment %s now writes its artifacts at %s; its runs until now "
                    "(artifacts at %s) are in experiment %s, renamed", experiment, location,
                    found.artifact_location, found.experiment_id)
        found = None
    if found:
        if EXPERIMENT_KIND_TAG not in found.tags:  # a store made before the tag was set
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **({EARLIER_TAG: ",".join(earlier)} if earlier else {})}
    return client.create_experiment(experiment, artifact_location=location, tags=tags)


def _moved(recorded: str, wanted: str) -> bool:
    """Whether a local artifact folder `recorded` by MLflow is not the one `wanted` here."""
    return recorded.startswith("file:") and recorded != wanted


def lineage(experiment_id: str, client: MlflowClient | None = None) -> list[str]:
    """`experiment_id` followed by the experiments it continues after moves of its store (newest
    first): where earlier finished runs, logged checkpoints and results are looked up."""
    tag = (client or MlflowClient()).get_experiment(experiment_id).tags.get(EARLIER_TAG, "")
    return [experiment_id, *(i for i in tag.split(",") if i)]


SERVER_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a tracking server's TCP connection before calling it unreachable."""


def check_reachable(uri: str, timeout: float = SERVER_CONNECT_TIMEOUT) -> None:
    """Raise `ConnectionError` naming `uri` unless an `http(s)://` tracking server accepts a
    connection within `timeout` seconds (other stores: nothing to check).

    MLflow's client retries a refused connection 7 times with exponential backoff (minutes of
    warnings) before it fails; a server that is down should fail the invocation at once, before
    any run is opened. Retries still cover a server that drops out during a run.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise ConnectionError(f"MLflow tracking server {uri} is not reachable ({err}); start it "
                              "(mlflow server ...), fix tracking.uri, or log locally with tracking=sqlite") from None


def ui_links(uri: str, base_url: str) -> dict[str, str]:
    """Experiment name -> the MLflow UI address of its runs table, for every active experiment
    with runs. MLflow 3.17's UI opens in its GenAI view unless the address (or an earlier click on
    "Model training") says `workflowType=machine_learning`; the experiment tag alone does not."""
    client = MlflowClient(uri)
    return {e.name: f"{base_url.rstrip('/')}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning"
            for e in client.search_experiments()
            if client.search_runs([e.experiment_id], max_results=1)}


def store_folder(uri: str) -> Path | None:
    """The folder of a local SQLite store (`sqlite:///<folder>/mlflow.db`); None for a server."""
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists into `a.b.0.c` keys with string values cut to MLflow's limit."""
    out: dict[str, str] = {}
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: str(tree)[:MAX_PARAM_LEN]}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@contextmanager
def stage_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    resume_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run around a stage: FINISHED on success; KILLED when the process is stopped
    (SIGTERM/SIGHUP/Ctrl-C) and FAILED on an error, both re-raised, with the reason in the tag
    `end_reason`.

    A resumed run (`resume_run_id`) keeps its params; a new one logs `params`. A run of an
    experiment that `experiment_id` continues (logged before the store moved) is not resumed,
    as its artifacts would go to the old folder: a new run, tagged `continues_run`, takes over.
    Started while another run is active, it is nested in it (a step of `stage=all`).
    """
    if resume_run_id is not None and MlflowClient().get_run(resume_run_id).info.experiment_id != experiment_id:
        log.warning("run %s was logged before the tracking store moved: continuing it in a new run", resume_run_id)
        tags, resume_run_id = {**tags, "continues_run": resume_run_id}, None
    run = mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else experiment_id,
                           run_name=None if resume_run_id else run_name,
                           nested=mlflow.active_run() is not None)
    try:
        mlflow.set_tags(dict(tags))
        if resume_run_id is not None:
            _clear_end_reason(run.info.run_id)
        if resume_run_id is None:
            keys = list(params)
            for start in range(0, len(keys), 100):
                mlflow.log_params({k: params[k] for k in keys[start:start + 100]})
        yield run
    except BaseException as err:
        status, reason = end_state(err)
        mlflow.set_tag("end_reason", reason[:5000])
        mlflow.end_run(status=status)
        raise
    mlflow.end_run(status="FINISHED")


def _clear_end_reason(run_id: str) -> None:
    """A resumed run is running again: its old `end_reason` becomes `resumed_after`."""
    client = MlflowClient()
    reason = client.get_run(run_id).data.tags.get("end_reason")
    if reason is not None:
        client.set_tag(run_id, "resumed_after", reason)
        client.delete_tag(run_id, "end_reason")


def end_state(err: BaseException) -> tuple[str, str]:
    """(MLflow status, reason) for a run that `err` ended."""
    if isinstance(err, Stopped):
        return "KILLED", str(err)
    if isinstance(err, KeyboardInterrupt):
        return "KILLED", "interrupted (SIGINT)"
    return "FAILED", f"{type(err).__name__}: {err}"


def find_finished_run(experiment_id: str, stage: str, reuse_key: str):
    """The newest FINISHED run of `stage` tagged with `reuse_key` (in `experiment_id` or the
    experiments it continues), or None."""
    runs = MlflowClient().search_runs(
        lineage(experiment_id),
        filter_string=f"tags.stage = '{stage}' and tags.reuse_key = '{reuse_key}' "
                      "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def close_stale_runs(experiment_id: str) -> list[str]:
    """End as KILLED every RUNNING run whose process (tags `host`, `pid`, `pid_start`) is gone,
    e.g. after `kill -9` or a power cut; returns their ids. Runs of other hosts are left alone:
    their process may be alive."""
    client = MlflowClient()
    closed = []
    for run in client.search_runs(lineage(experiment_id, client), filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        owner = Owner.from_tags(run.data.tags)
        if owner is None or not owner.is_gone():
            continue
        reason = (f"process {owner.pid} on {owner.host} ended without closing the run (killed?); "
                  f"closed by process {Owner.me().pid}")
        client.set_tag(run.info.run_id, "end_reason", reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("run %s (%s): %s", run.info.run_name, run.info.run_id, reason)
        closed.append(run.info.run_id)
    return closed
