"""stage=evaluate: EBPG, IoU, Bbox, Drop, Increase and Time of one method's maps (Table I row),
pointing game and deletion / insertion AUC (Table III).

Config keys read: `device`, `data.processed_dir`, `xai.{name, checkpoint, split, target,
maps_dir, figures_dir, transform, progress, amp, amp_dtype, channels_last}` (the explanation's
precision, so the prediction and its units are the explanation's), `metrics.{batch_size, evaluators}`. Reads the maps and
`explain.json` that stage=explain wrote for the same checkpoint (checked by hash), the split's
COCO boxes and masks; logs the metrics (overall and `<metric>/<class>`), unit counts, skipped
units by reason, and tags the run with method, checkpoint (+ hash) and the device of the times.
The mean deletion / insertion curves go to metrics.json, to the metric histories
`deletion_curve` / `insertion_curve` (step s = point s / S) and to a figure.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from vqi.utils.progress import progress

from vqi.classes import FOREGROUND_IDS
from vqi.data.dataset import SegmentationDataset, read_split
from vqi.metrics.boxes import box_masks
from vqi.metrics.evaluator import Evaluators, ImageResult
from vqi.metrics.faithfulness import masked_confidences
from vqi.engine.precision import Precision
from vqi.models.checkpoint import load_model
from vqi.reporting.charts import save_curves_figure
from vqi.reporting.table1 import label
from vqi.utils.atomic import write_json
from vqi.utils.device import device_name, resolve_device
from vqi.xai.maps import META, file_hash, load_maps, read_meta
from vqi.xai.targets import model_logits, select_units
from vqi.engine.prediction import predicted_classes

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"evaluate-{cfg.xai.name}"


def inputs(cfg: DictConfig) -> list[Path]:
    """A new explain run rewrites explain.json, which makes a finished evaluation stale."""
    return [Path(cfg.xai.checkpoint), Path(cfg.data.processed_dir) / "annotations" / f"{cfg.xai.split}.json",
            Path(cfg.xai.maps_dir) / cfg.xai.name / META]


def _evaluators(cfg: DictConfig, class_names: list[str], model: torch.nn.Module) -> Evaluators:
    """Partial evaluators get the class names, and the model when they take one (deletion)."""
    built = []
    for spec in cfg.metrics.evaluators.values():
        e = instantiate(spec)
        if isinstance(e, functools.partial):
            wants_model = "model" in inspect.signature(e.func).parameters
            e = e(class_names, model=model) if wants_model else e(class_names)
        built.append(e)
    return Evaluators(built)


def run(cfg: DictConfig) -> dict[str, float]:
    xc = cfg.xai
    device = resolve_device(cfg.device)
    method_dir = Path(xc.maps_dir) / xc.name
    meta = read_meta(method_dir)
    checkpoint_hash = file_hash(xc.checkpoint)
    if meta["checkpoint_hash"] != checkpoint_hash or meta["target"] != xc.target:
        raise ValueError(f"{method_dir / META}: maps were made from checkpoint {meta.get('checkpoint')} "
                         f"(hash {meta['checkpoint_hash']}, target {meta['target']}), not {xc.checkpoint} "
                         f"(hash {checkpoint_hash}, target {xc.target}); run stage=explain force=true")
    precision = Precision.of(xc)   # the explanation's: the same prediction, so the same units
    model, ckpt = load_model(xc.checkpoint, device)
    model = precision.prepare(model, device)
    names = list(ckpt["class_names"])
    dataset = SegmentationDataset(cfg.data.processed_dir, xc.split, instantiate(xc.transform))
    doc = read_split(cfg.data.processed_dir, xc.split)
    anns: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        anns.setdefault(ann["image_id"], []).append(ann)
    image_ids = {Path(img["file_name"]).stem: img["id"] for img in doc["images"]}
    evaluators = _evaluators(cfg, names, model)
    evaluators.reset()
    index = {stem: i for i, stem in enumerate(dataset.stems)}
    for stem, info in progress(meta["images"].items(), desc=f"evaluate {xc.name}", disable=not xc.progress):
        if stem not in index:
            raise ValueError(f"{method_dir / META}: image {stem!r} is not in split {xc.split!r}")
        image, gt, _ = dataset[index[stem]]
        image, gt = image.to(device), gt.to(device)
        with torch.no_grad(), precision.context(device):
            pred = predicted_classes(model_logits(model, image[None]))[0]
        units, _ = select_units(gt, pred, xc.target, FOREGROUND_IDS)
        maps = load_maps(method_dir / f"{stem}.npz")
        explained = [names[c] for c, _ in units]
        if explained != info["classes"] or sorted(maps) != sorted(explained):
            raise ValueError(f"{method_dir / f'{stem}.npz'}: maps for {sorted(maps)}, but the checkpoint's "
                             f"units of this image are {explained}; run stage=explain force=true")
        classes = [c for c, _ in units]
        height, width = gt.shape
        boxes = box_masks(anns.get(image_ids[stem], []), height, width, classes)
        missing = [names[c] for c in classes if not boxes[c].any()]
        if missing:
            raise ValueError(f"{Path(cfg.data.processed_dir) / 'annotations' / f'{xc.split}.json'}: image "
                             f"{stem!r} has {missing} pixels in its mask but no bbox of that category")
        stack = (np.stack([maps[n] for n in explained]) if units
                 else np.zeros((0, height, width), np.float32))
        if stack.shape[1:] != (height, width):
            raise ValueError(f"{method_dir / f'{stem}.npz'}: maps are {stack.shape[1:]}, images {height}x{width}")
        y = o = np.zeros(0)
        targets = None
        with precision.context(device):   # Drop / Increase and deletion / insertion run the model
            if units:
                targets = torch.stack([m for _, m in units])
                y_t, o_t = masked_confidences(model, image, torch.from_numpy(stack).to(device), classes, targets,
                                              batch_size=int(cfg.metrics.batch_size))
                y, o = y_t.cpu().numpy(), o_t.cpu().numpy()
            evaluators.process(ImageResult(
                stem=stem, class_ids=classes, maps=stack, gt=gt.cpu().numpy(),
                boxes=np.stack([boxes[c] for c in classes]) if units else np.zeros((0, height, width), bool),
                y=y, o=o, seconds=info.get("seconds"), image=image, targets=targets,
                skipped={names.index(n): why for n, why in info.get("skipped", {}).items()}))
    metrics = evaluators.evaluate()
    curves = {k: v for e in evaluators.evaluators if hasattr(e, "curves") for k, v in e.curves().items()}
    write_json(method_dir / "metrics.json", {"method": xc.name, "checkpoint": str(xc.checkpoint),
                                             "checkpoint_hash": checkpoint_hash, "device": meta.get("device"),
                                             "tau": cfg.metrics.tau, "target": xc.target, "metrics": metrics,
                                             "curves": curves})
    now = int(time.time() * 1000)   # metric history: step s = point s / S of the mean curve
    history = [Metric(f"{kind}_curve", float(v), now, step) for kind, curve in curves.items()
               for step, v in enumerate(curve) if np.isfinite(v)]
    if history:
        MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=history)
    if curves:
        path = save_curves_figure(Path(xc.figures_dir) / "deletion_insertion.png", {label(xc.name): curves},
                                  title=f"{label(xc.name)}: deletion and insertion (mean over units)")
        mlflow.log_artifact(str(path), artifact_path="figures")
    mlflow.set_tags({"xai_method": xc.name, "xai_engine": meta.get("engine", ""), "xai_target": xc.target,
                     "checkpoint": str(xc.checkpoint), "checkpoint_hash": checkpoint_hash,
                     "device": str(meta.get("device")), "metrics_tau": str(cfg.metrics.tau),
                     "metrics_device": device_name(device), "pointing_radius": str(cfg.metrics.pointing_radius),
                     "deletion_steps": str(cfg.metrics.deletion_steps)})
    mlflow.log_artifact(str(method_dir / "metrics.json"), artifact_path="evaluate")
    log.info("evaluate %s: %s", xc.name, ", ".join(f"{k} {metrics[k]:.2f}" for k in
                                                   ("ebpg", "bbox", "iou", "drop", "increase", "pointing",
                                                    "deletion", "insertion", "time", "units")
                                                   if k in metrics))
    return metrics
