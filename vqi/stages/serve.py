"""stage=serve: the local inspection web app and the expert's review page (`make serve`).

Reads: `serve.host`, `serve.allowed_hosts`, `serve.port`, `serve.checkpoints` (id -> file, or a registered model
`models:/<name>/<version>`), `serve.model` (a registered model, served as `<name>-v<version>`), `serve.discover` (also
the checkpoints that runs in the tracking store logged: tag `checkpoint_dir` -> best.pt/last.pt),
`serve.methods`, `serve.image_size`, `serve.device`, `serve.{amp, amp_dtype, channels_last}`, `serve.max_upload_mb`,
`serve.max_image_pixels`, `serve.cache_models`, `serve.review_file`, `serve.images_dir`,
`serve.masks_dir`, `serve.annotations_file`, `serve.k_max`, `serve.display_max_side`, `serve.work_dir`,
`serve.class_map`, `serve.void`, `serve.point_tolerance`,
`tracking.uri`, `tracking.experiment`.

Binds 127.0.0.1 by default and serves until interrupted (Ctrl-C ends the run as FINISHED;
SIGTERM, e.g. a container stop, ends it KILLED and exits 143).
Never part of `stage=all`.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from werkzeug.serving import make_server

from vqi import model_registry, tracking
from vqi.serve.app import create_app, fast_methods
from vqi.serve.registry import CheckpointRegistry
from vqi.engine.precision import Precision
from vqi.utils.device import resolve_device

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "run"


def discovered_checkpoints(uri: str, experiment: str) -> dict[str, Path]:
    """id -> checkpoint file for every run of `experiment` (and of those it continues, see
    `tracking.lineage`) that logged a `checkpoint_dir` tag, newest run first; a file listed by
    several runs keeps the newest run's id. A folder inside a local store's folder is found
    relative to the store (tag `checkpoint_dir_in_store`), so a moved or copied checkout serves
    its own checkpoints."""
    client = MlflowClient(uri)
    store = tracking.store_folder(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out: dict[str, Path] = {}
    seen: set[Path] = set()
    for run in client.search_runs(tracking.lineage(found.experiment_id, client),
                                  order_by=["attributes.start_time DESC"], max_results=1000):
        inside = run.data.tags.get("checkpoint_dir_in_store")
        folder = (store / inside) if store is not None and inside else run.data.tags.get("checkpoint_dir")
        if not folder:
            continue
        name = _slug(run.data.tags.get("mlflow.runName", run.info.run_id))
        for kind in ("best", "last"):
            path = Path(folder, f"{kind}.pt").resolve()
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            key = f"{name}-{kind}"
            if key in out:
                key = f"{name}-{run.info.run_id[:8]}-{kind}"
            out[key] = path
    return out


def registry_entries(cfg: DictConfig) -> dict[str, Path | str]:
    """id -> checkpoint file, or registered model URI (`models:/<name>/<version>`, checked to be in
    the tracking store: `RegisteredModelNotFound` names it and the store otherwise)."""
    entries: dict[str, Path | str] = {str(k): _source(v) for k, v in (cfg.serve.checkpoints or {}).items()}
    if cfg.serve.get("model"):
        name, version = model_registry.parse_model_uri(cfg.serve.model)
        entries.setdefault(f"{name}-v{version}", str(cfg.serve.model))
    if cfg.serve.discover:
        files = {p.resolve() for p in entries.values() if isinstance(p, Path)}
        for key, path in discovered_checkpoints(cfg.tracking.uri, cfg.tracking.experiment).items():
            if path not in files:
                entries.setdefault(key, path)
    missing = [f"{k}={v}" for k, v in entries.items() if isinstance(v, Path) and not v.is_file()]
    if missing:
        raise FileNotFoundError(f"serve.checkpoints: no such file for {', '.join(missing)}")
    for uri in {v for v in entries.values() if isinstance(v, str)}:
        model_registry.find_version(uri, str(cfg.tracking.uri))
    return entries


def _source(value: object) -> Path | str:
    """A registered model's URI as it is, anything else as a checkpoint file."""
    return str(value) if str(value).startswith("models:/") else Path(str(value))


def allowed_hosts(cfg: DictConfig) -> list[str]:
    """Host header names the app answers besides loopback: `serve.allowed_hosts`, and the bound
    address unless it is a wildcard."""
    hosts = [str(h) for h in cfg.serve.get("allowed_hosts") or []]
    bound = str(cfg.serve.host)
    return hosts + ([bound] if bound not in ("0.0.0.0", "::", "") else [])


def build_app(cfg: DictConfig):
    """The app the config describes (also used by tests)."""
    s = cfg.serve
    entries = registry_entries(cfg)
    sources = {k: functools.partial(model_registry.load_registered, v, str(cfg.tracking.uri))
               if isinstance(v, str) else v for k, v in entries.items()}
    registry = CheckpointRegistry(sources, resolve_device(str(s.device)), int(s.image_size), int(s.cache_models),
                                  Precision.of(s))
    app = create_app(registry, fast_methods(list(s.methods)), s.review_file, s.images_dir, s.masks_dir,
                     s.work_dir, OmegaConf.to_container(s.class_map), str(s.void), float(s.point_tolerance),
                     int(float(s.max_upload_mb) * 2**20), int(s.max_image_pixels), allowed_hosts(cfg),
                     s.annotations_file, int(s.display_max_side), int(s.k_max))
    return app, entries


def run(cfg: DictConfig) -> dict[str, float]:
    app, entries = build_app(cfg)
    server = make_server(str(cfg.serve.host), int(cfg.serve.port), app, threaded=True)
    url = f"http://{server.host}:{server.server_port}/"
    mlflow.set_tags({"serve_url": url, "serve_checkpoints": ", ".join(entries)[:5000]})
    if not entries:
        log.warning("no checkpoints: train a model (stage=train) or set serve.checkpoints.<id>=<file>")
    print(f"vqi serve: {len(entries)} checkpoint(s) [{', '.join(entries)}], review file "
          f"{cfg.serve.review_file}\nserving on {url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("serve: interrupted, shutting down")
    finally:
        server.server_close()
    return {"checkpoints": float(len(entries))}
