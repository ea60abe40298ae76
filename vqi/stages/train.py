"""stage=train: DeepLabv3 on the prepared dataset, with resumable checkpoints.

Config keys read: `seed`, `device`, `data.processed_dir`, `data.image_size` (via transforms),
`model.{arch,weights,weights_backbone,aux_loss,output_stride}`, `loss` (`_target_`), and `train.*`:
`epochs, labels, batch_size, lr, accumulate, aux_weight, bn_momentum, amp, channels_last, tap_sparse, compile,
num_workers, split, val_split, eval_untrained, progress, force, stop_after_epochs, checkpoint_dir,
optimizer, scheduler, transforms, impactx`; with `train.impactx.enabled` also `paths.tables_dir`
and the teacher method's `xai` group.

IMPACTX (`train.impactx.enabled=true`, docs/metrics.md "IMPACTX"): the model gets an explanation
branch trained to predict the teacher's maps (`train.impactx.teacher`, else the method Table I
chose, explaining `train.impactx.teacher_checkpoint`, the baseline, on the training split with
T_c = the annotated mask), computed once into `train.impactx.maps_dir/<method>/` and reused; the
loss adds `train.impactx.weight` (lambda) times their reconstruction error. The teacher (method
and checkpoint hash) is part of the training's identity, as the data are.

Every epoch writes `last.pt` (and `best.pt` when validation Overall IoU improves) atomically;
only `last.pt` holds the optimizer and scheduler state that resuming needs. A finished training
logs `best.pt` once to MLflow, as the artifact `model/best.pt`, and (`tracking.register_models`) its
model with `mlflow.pytorch.log_model`, registered as `vqi-<experiment_name>-<train.tag>` (`vqi.model_registry`).
A run finds `last.pt` and then: continues it (same config, unfinished; the MLflow run continues
too, see `resume_run_id`), reuses it (same config, finished), or stops with an error (other
config) unless `train.force=true`. Under `torchrun`, rank 0 alone writes and logs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from vqi import model_registry, tracking
from vqi.classes import CLASS_NAMES
from vqi.config import build_cam, relocatable, with_xai_method
from vqi.data.dataset import SegmentationDataset, class_names, seed_worker
from vqi.data.prepared import current_fingerprint
from vqi.engine import distributed
from vqi.engine.precision import Precision
from vqi.engine.train_loop import evaluate, make_scaler, set_bn_momentum, train_one_epoch
from vqi.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from vqi.models.factory import build_model
from vqi.reporting.charts import save_training_curves
from vqi.utils import atomic
from vqi.utils.device import resolve_device
from vqi.utils.seed import seed_everything
from vqi.xai.maps import file_hash
from vqi.xai.teacher import TARGET, teacher_maps_ready, write_teacher_maps
from vqi.xai.teacher_maps import TeacherMapsDataset

log = logging.getLogger(__name__)

RUNTIME_KEYS = ("num_workers", "force", "progress", "checkpoint_dir", "eval_untrained", "stop_after_epochs", "compile")
"""`train.*` keys that do not change what is trained, so a resume may differ in them."""


RESUME_ONLY_KEYS = ("optimizer", "scheduler")
"""Checkpoint keys only `last.pt` keeps: resuming needs them, using the model does not."""

MODEL_ARTIFACT = "model/best.pt"
"""Where a finished training's model (best.pt, weights only) lies among its MLflow artifacts."""


IMPACTX_RUNTIME_KEYS = ("maps_dir",)
"""`train.impactx.*` keys that do not change what is trained (where the teacher's maps are cached)."""

CHOSEN_METHOD = "chosen_method.json"
"""Table I's chosen method in `paths.tables_dir` (written by stage=report): the default teacher."""


class CheckpointConfigError(RuntimeError):
    """`last.pt` was written by a different training config."""


class ImpactXTeacherError(ValueError):
    """IMPACTX's teacher (method or checkpoint) cannot be found, or is the model being trained."""


def run_name(cfg: DictConfig) -> str:
    return f"train-{cfg.experiment_name}-{cfg.train.tag}"


def _data_fingerprint(cfg: DictConfig) -> str:
    """The prepared folder's fingerprint plus a hash of the training split's annotations, so a
    changed augmented split (an expert's new decisions) is a different training, not a reuse."""
    split = Path(cfg.data.processed_dir) / "annotations" / f"{cfg.train.split}.json"
    annotations = hashlib.sha256(split.read_bytes()).hexdigest()[:16] if split.is_file() else None
    return f"{current_fingerprint(Path(cfg.data.processed_dir))}:{annotations}"


def _fingerprint(cfg: DictConfig) -> str:
    """What the training learns from: the data (`_data_fingerprint`) and, for IMPACTX, the
    teacher (method and checkpoint hash), so a retrained baseline or another chosen method is a
    different training, not a reuse."""
    if not cfg.train.impactx.enabled:
        return _data_fingerprint(cfg)
    method, checkpoint = impactx_teacher(cfg)
    return f"{_data_fingerprint(cfg)}:teacher {method}@{file_hash(checkpoint)}"


def _identity(config: dict[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """The part of a resolved config that decides what a training produces, with the checkout's
    folders as placeholders: a moved or copied checkout continues its own last.pt. A disabled
    `train.impactx` is left out, so checkpoints written before the option existed still match."""
    config = relocatable(config)
    train = {k: v for k, v in config["train"].items() if k not in RUNTIME_KEYS}
    impactx = train.pop("impactx", None) or {}
    if impactx.get("enabled"):
        train["impactx"] = {k: v for k, v in impactx.items() if k not in IMPACTX_RUNTIME_KEYS}
    model = {k: v for k, v in (config.get("model") or {}).items() if k != "target_layer"}  # explaining only
    return {"seed": config.get("seed"), "data": config.get("data"), "model": model,
            "loss": config.get("loss"), "train": train, "dataset_fingerprint": fingerprint}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))]
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _plain_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


_read_ahead: dict[tuple[str, int, int, int], dict] = {}
"""`last.pt` as `resume_run_id` read it, for the `run` that follows (vqi.run calls both), keyed by
the file's path, inode, size and modification time: the checkpoint is read once, and a changed file again."""


def _last_checkpoint(last: Path, keep: bool) -> dict:
    stat = last.stat()
    key = (str(last.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    ckpt = _read_ahead.pop(key, None)
    _read_ahead.clear()  # at most one, and never a stale one
    if ckpt is None:
        ckpt = load_checkpoint(last)
    if keep:
        _read_ahead[key] = ckpt
    return ckpt


def checkpoint_state(cfg: DictConfig, keep: bool = False) -> tuple[str, dict | None]:
    """`("fresh", None)`, `("resume", last)` or `("done", last)` for this config's `last.pt`;
    `keep`: hold the checkpoint read for the next call (`resume_run_id` before `run`).

    Raises `CheckpointConfigError` when `last.pt` comes from a different config.
    """
    last = Path(cfg.train.checkpoint_dir) / "last.pt"
    if cfg.train.force or not last.is_file():
        return "fresh", None
    ckpt = _last_checkpoint(last, keep)
    diff = _differences(_identity(ckpt.get("config") or {"train": {}}, ckpt.get("dataset_fingerprint")),
                        _identity(_plain_config(cfg), _fingerprint(cfg)))
    if diff:
        shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise CheckpointConfigError(
            f"{last} was written by a different training config ({shown}). Set train.force=true "
            f"to start over (it overwrites last.pt and best.pt), or choose another "
            f"train.checkpoint_dir (or train.tag).")
    return ("done" if ckpt["epoch"] >= cfg.train.epochs else "resume"), ckpt


def resume_run_id(cfg: DictConfig) -> str | None:
    """The MLflow run of an unfinished training with this config, to continue it."""
    try:
        state, ckpt = checkpoint_state(cfg, keep=True)
    except (CheckpointConfigError, ValueError):
        return None  # run() raises the error inside a run, where it is recorded
    return ckpt.get("mlflow_run_id") if state == "resume" else None


def run(cfg: DictConfig) -> dict[str, float]:
    device = resolve_device(cfg.device)
    dist_info = distributed.setup(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    try:
        return _train(cfg, device, dist_info)
    finally:
        distributed.cleanup()


def _loader(dataset: SegmentationDataset, cfg: DictConfig, sampler, generator, train: bool,
            device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler,
                      num_workers=cfg.train.num_workers, pin_memory=device.type == "cuda",
                      drop_last=train, worker_init_fn=seed_worker, generator=generator)


def _train(cfg: DictConfig, device: torch.device, dist_info: distributed.DistInfo) -> dict[str, float]:
    tc = cfg.train
    main = dist_info.is_main
    ckpt_dir = Path(tc.checkpoint_dir)
    if main:  # checkpoints a process killed with -9 was writing
        atomic.remove_stale_temporaries(ckpt_dir)
    state, ckpt = checkpoint_state(cfg)
    if state == "done":
        log.info("reusing the finished training in %s (%d/%d epochs, same config)",
                 ckpt_dir, ckpt["epoch"], tc.epochs)
        if main:
            mlflow.set_tag("reused_checkpoint", str(ckpt_dir / "last.pt"))
        return _final(ckpt.get("metrics") or {})
    if state == "fresh" and (ckpt_dir / "last.pt").is_file():
        log.warning("train.force=true: starting over, replacing the checkpoints in %s", ckpt_dir)

    processed = Path(cfg.data.processed_dir)
    names = class_names(processed, tc.split)
    explaining = bool(tc.impactx.enabled)
    if explaining:   # before seeding: loading the teacher draws no numbers from this training's stream
        if main:
            prepare_teacher_maps(cfg, names, device)
        distributed.barrier()
    model_config = build_config(cfg, len(names))
    seed_everything(int(cfg.seed) + dist_info.rank)
    model = build_model(**model_config)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    if tc.bn_momentum is not None:
        set_bn_momentum(model, float(tc.bn_momentum))
    model.to(device)
    if tc.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if dist_info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:   # training steps only; validation and checkpoints use the eager `model`
        net = torch.compile(net)
    criterion = instantiate(cfg.loss)
    optimizer = instantiate(tc.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    scheduler = instantiate(tc.scheduler)(optimizer=optimizer)
    start, best = 0, -math.inf
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, best = int(ckpt["epoch"]), float(ckpt["best_score"])
        log.info("resuming %s at epoch %d/%d (best val Overall IoU so far %.4f)",
                 ckpt_dir / "last.pt", start, tc.epochs, best)

    if explaining:
        train_ds = TeacherMapsDataset(processed, tc.split, instantiate(tc.transforms.train), teacher_maps_dir(cfg),
                                      names, labels=tc.labels)
    else:
        train_ds = SegmentationDataset(processed, tc.split, instantiate(tc.transforms.train), labels=tc.labels)
    per_rank = len(train_ds) // dist_info.world_size
    if per_rank < tc.batch_size:
        raise ValueError(f"split {tc.split!r} has {len(train_ds)} images: fewer than "
                         f"train.batch_size={tc.batch_size} per process ({dist_info.world_size} "
                         f"process(es)); lower train.batch_size")
    val_loader = None
    if tc.val_split:
        val_ds = SegmentationDataset(processed, tc.val_split, instantiate(tc.transforms.eval), labels=tc.labels)
        val_loader = _loader(val_ds, cfg, distributed.ShardSampler(len(val_ds), dist_info.rank,
                                                                   dist_info.world_size),
                             None, False, device)
    progress = bool(tc.progress) and main
    scaler = make_scaler(device, tc.amp)
    run_id = mlflow.active_run().info.run_id if main and mlflow.active_run() else None
    fingerprint = _fingerprint(cfg)

    def validate() -> dict[str, float]:
        if val_loader is None:
            return {}
        cm = evaluate(model, val_loader, device, len(CLASS_NAMES),
                      precision=Precision(bool(tc.amp), channels_last=bool(tc.channels_last)), progress=progress, tap_sparse=tc.tap_sparse)
        return {f"val_{k}": v for k, v in cm.metrics().items()}

    if start == 0 and tc.eval_untrained and val_loader is not None:
        untrained = validate()
        if main:
            mlflow.log_metrics(_finite(untrained), step=0)
            log.info("untrained model: val Overall IoU %.4f", untrained["val_iou_overall"])

    metrics: dict[str, float] = dict(ckpt.get("metrics") or {}) if ckpt else {}
    stop = tc.epochs if tc.stop_after_epochs is None else min(tc.epochs, start + int(tc.stop_after_epochs))
    for epoch in range(start, stop):
        generator = torch.Generator().manual_seed(int(cfg.seed) * 1000 + epoch * 100 + dist_info.rank)
        if dist_info.enabled:
            sampler = DistributedSampler(train_ds, dist_info.world_size, dist_info.rank, shuffle=True,
                                         seed=int(cfg.seed), drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(train_ds, generator=generator)
        train_ds.reseed(int(generator.initial_seed()))
        stats = train_one_epoch(net, criterion, optimizer, _loader(train_ds, cfg, sampler, generator, True, device),
                                device, scaler=scaler, amp=tc.amp, channels_last=tc.channels_last,
                                accumulate=tc.accumulate, aux_weight=tc.aux_weight, epoch=epoch,
                                progress=progress, tap_sparse=tc.tap_sparse,
                                explanation_weight=float(tc.impactx.weight) if explaining else None)
        loss = distributed.all_reduce_sum(torch.tensor([stats["loss"]], dtype=torch.float64))
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = {"train_loss": float(loss) / dist_info.world_size, "lr": lr, **validate()}
        if explaining:
            recon = distributed.all_reduce_sum(torch.tensor([stats["reconstruction"]], dtype=torch.float64))
            metrics["train_reconstruction"] = float(recon) / dist_info.world_size
        score = metrics.get("val_iou_overall", math.nan)
        improved = val_loader is None or (math.isfinite(score) and score > best)
        if improved and math.isfinite(score):
            best = score
        metrics["best_val_iou_overall"] = best
        if main:
            ckpt_out = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best_score": best,
                "class_names": names, "model_config": model_config, "config": _plain_config(cfg),
                "mlflow_run_id": run_id, "dataset_fingerprint": fingerprint, "metrics": metrics,
            }
            if improved:  # best.pt is for using the model: no optimizer state (2x the weights with AdamW)
                save_checkpoint({k: v for k, v in ckpt_out.items() if k not in RESUME_ONLY_KEYS},
                                ckpt_dir / "best.pt")
            save_checkpoint(ckpt_out, ckpt_dir / "last.pt")
            mlflow.log_metrics(_finite(metrics), step=epoch + 1)
            log.info("epoch %d/%d: loss %.4f, val Overall IoU %.4f%s", epoch + 1, tc.epochs,
                     metrics["train_loss"], score, " (best)" if improved else "")
        distributed.barrier()

    if stop < tc.epochs:
        log.info("train.stop_after_epochs=%s: stopping at epoch %d/%d; rerun to continue",
                 tc.stop_after_epochs, stop, tc.epochs)
    if main:
        if stop == tc.epochs and (ckpt_dir / "best.pt").is_file():  # the model, once, when trained
            mlflow.log_artifact(str(ckpt_dir / "best.pt"), artifact_path=MODEL_ARTIFACT.rsplit("/", 1)[0])
            mlflow.set_tag("model_artifact", MODEL_ARTIFACT)
            if cfg.tracking.register_models:
                model_registry.log_trained_model(
                    ckpt_dir / "best.pt", model_registry.registered_name(cfg.experiment_name, tc.tag),
                    model_registry.example_images(SegmentationDataset(processed, tc.split, instantiate(tc.transforms.eval))))
        _tag_checkpoint_dir(cfg, ckpt_dir)
        if run_id:
            _log_training_curves(cfg, run_id, ckpt_dir, model_config["arch"])
    return _final(metrics)


def _log_training_curves(cfg: DictConfig, run_id: str, ckpt_dir: Path, arch: str) -> None:
    """`<checkpoint_dir>/training_curves.png` from the run's per-epoch history (a resumed run's
    earlier epochs included), logged under `figures/`."""
    client = MlflowClient()

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key) if math.isfinite(m.value)}

    loss = history("train_loss")
    if not loss:
        return
    val = {"Overall": history("val_iou_overall"),
           **{name: history(f"val_iou_{name}") for name in CLASS_NAMES[1:]}}
    path = save_training_curves(ckpt_dir / "training_curves.png", loss, {k: v for k, v in val.items() if v},
                                title=f"Training {arch} ({cfg.experiment_name}, {cfg.train.tag}): "
                                      f"{len(loss)} epoch(s), split '{cfg.train.split}'")
    mlflow.log_artifact(str(path), artifact_path="figures")


def _tag_checkpoint_dir(cfg: DictConfig, ckpt_dir: Path) -> None:
    """Tag where the checkpoints lie: `checkpoint_dir` (absolute) and, inside the tracking
    store's folder, `checkpoint_dir_in_store` (relative), which a moved or copied store uses."""
    mlflow.set_tag("checkpoint_dir", str(ckpt_dir))
    store = tracking.store_folder(str(cfg.tracking.uri))
    if store is not None and ckpt_dir.resolve().is_relative_to(store.resolve()):
        mlflow.set_tag("checkpoint_dir_in_store", ckpt_dir.resolve().relative_to(store.resolve()).as_posix())


def build_config(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """`build_model`'s arguments from `cfg.model` (and, for IMPACTX, the encoding's channels from
    `train.impactx`); checkpoints store them as `model_config`."""
    config = {"arch": cfg.model.arch, "num_classes": num_classes, "weights": cfg.model.weights,
              "weights_backbone": cfg.model.weights_backbone, "aux_loss": bool(cfg.model.aux_loss),
              "output_stride": cfg.model.output_stride}
    if cfg.train.impactx.enabled:
        config["explanation_channels"] = int(cfg.train.impactx.channels)
    return config


def impactx_teacher(cfg: DictConfig) -> tuple[str, Path]:
    """(xai method, checkpoint) whose maps IMPACTX's branch learns: `train.impactx.teacher`, else
    the method Table I chose (`<paths.tables_dir>/chosen_method.json`), explaining
    `train.impactx.teacher_checkpoint`, which must exist and lie outside this training's folder."""
    ic = cfg.train.impactx
    checkpoint = Path(ic.teacher_checkpoint)
    if not checkpoint.is_file():
        raise ImpactXTeacherError(f"train.impactx.teacher_checkpoint: {checkpoint} does not exist "
                                  "(train the baseline first, or point it at a trained model's best.pt)")
    if checkpoint.resolve().parent == Path(cfg.train.checkpoint_dir).resolve():
        raise ImpactXTeacherError(f"train.impactx.teacher_checkpoint {checkpoint} lies in train.checkpoint_dir: "
                                  "the model would teach itself; set train.tag (e.g. train.tag=impactx) "
                                  "or train.checkpoint_dir")
    chosen = Path(cfg.paths.tables_dir) / CHOSEN_METHOD
    if not ic.teacher and not chosen.is_file():
        raise ImpactXTeacherError(f"train.impactx.teacher=null takes the method Table I chose, but {chosen} "
                                  "does not exist (run stage=report on the baseline; it chooses none when no "
                                  "method explained a unit), or set train.impactx.teacher=<xai method>")
    method = str(ic.teacher or json.loads(chosen.read_text())["method"])
    if method == "impactx":
        raise ImpactXTeacherError("train.impactx.teacher: impactx explains a model by its own branch; the "
                                  "teacher is a CAM method of the baseline (e.g. hirescam)")
    return method, checkpoint


def impactx_inputs(cfg: DictConfig) -> list[Path]:
    """Files an IMPACTX training learns from besides the data (a stage's reuse key lists them)."""
    ic = cfg.train.impactx
    if not ic.enabled:
        return []
    return [Path(ic.teacher_checkpoint), *([] if ic.teacher else [Path(cfg.paths.tables_dir) / CHOSEN_METHOD])]


def teacher_maps_dir(cfg: DictConfig) -> Path:
    """Where the teacher's maps of the training images lie: `<train.impactx.maps_dir>/<method>`."""
    return Path(cfg.train.impactx.maps_dir) / impactx_teacher(cfg)[0]


def prepare_teacher_maps(cfg: DictConfig, names: list[str], device: torch.device) -> None:
    """Write the teacher's maps of every training image (`vqi.xai.teacher`) to `teacher_maps_dir`,
    unless it already holds those of the same teacher, data, labels and settings."""
    method, checkpoint = impactx_teacher(cfg)
    xai_cfg = with_xai_method(cfg, method)
    xc = xai_cfg.xai
    source = {"method": method, "checkpoint_hash": file_hash(checkpoint), "target": TARGET,
              "split": str(cfg.train.split), "labels": str(cfg.train.labels), "data": _data_fingerprint(cfg),
              "image_size": int(cfg.data.image_size), "engine": str(xc.engine), "target_layer": str(xc.target_layer)}
    folder = teacher_maps_dir(cfg)
    if teacher_maps_ready(folder, source):
        log.info("IMPACTX: reusing the teacher's maps in %s (%s of %s)", folder, method, checkpoint)
        return
    teacher, ckpt = load_model(checkpoint, device)
    shared = min(len(names), len(ckpt["class_names"]))
    if list(ckpt["class_names"][:shared]) != names[:shared]:
        raise ImpactXTeacherError(f"train.impactx.teacher_checkpoint {checkpoint}: classes {ckpt['class_names']} "
                                  f"do not match the training split's {names}")
    precision = Precision.of(xc)
    cam = build_cam(xai_cfg, precision.prepare(teacher, device))
    dataset = SegmentationDataset(cfg.data.processed_dir, cfg.train.split, instantiate(xc.transform),
                                  labels=cfg.train.labels)
    log.info("IMPACTX: the teacher's maps (%s of %s, T_c = the annotated mask) of %d training images -> %s",
             method, checkpoint, len(dataset), folder)
    write_teacher_maps(cam, dataset, names, range(1, shared), folder, source, batch_size=int(xc.batch_size),
                       device=device, precision=precision, show_progress=bool(cfg.train.progress))


def _final(metrics: dict[str, float]) -> dict[str, float]:
    """The last epoch's metrics as `final_*`, apart from the per-epoch series (vqi.run logs
    a stage's returned metrics once more, at step 0)."""
    return {f"final_{k}": v for k, v in metrics.items()}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
