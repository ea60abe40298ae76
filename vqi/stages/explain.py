"""stage=explain: the CAM map of every unit (image x foreground class) of a split, one method.

Config keys read: `seed`, `device`, `data.processed_dir`, `xai.{name, method, library_method,
engine, target, target_layer, split, checkpoint, batch_size, max_images, figures, maps_dir,
figures_dir, transform, progress, amp, amp_dtype, channels_last}`. Writes `<xai.maps_dir>/<xai.name>/<stem>.npz` (one array per
class name, docs/architecture.md) and `explain.json` (units, skipped units, seconds per image,
checkpoint hash, device); logs Fig. 3-style overlays. The method's folder is built beside and
swapped in whole, so it holds one model's maps: an interrupted run leaves the previous one.
Time per image: wall clock of the map computation of its batch (model warm, CUDA synchronised) /
images in the batch; the prediction pass that gives T_c is not counted (it is the same for every
method).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from vqi.utils.progress import progress

from vqi.classes import CLASS_NAMES
from vqi.data.dataset import SegmentationDataset
from vqi.engine.precision import Precision
from vqi.models.checkpoint import load_model
from vqi.config import build_cam
from vqi.reporting.figures import save_cam_figure, to_rgb
from vqi.reporting.table1 import label
from vqi.utils.atomic import atomic_dir, staged_files
from vqi.utils.device import device_name, resolve_device
from vqi.utils.seed import seed_everything
from vqi.xai.base import BaseCAM
from vqi.xai.maps import file_hash, save_maps, write_meta
from vqi.xai.targets import Unit, model_logits, select_units
from vqi.engine.prediction import predicted_classes

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"explain-{cfg.xai.name}"


def inputs(cfg: DictConfig) -> list[Path]:
    """Files whose change makes a finished explain run stale (the run's reuse key)."""
    return [Path(cfg.xai.checkpoint), Path(cfg.data.processed_dir) / "annotations" / f"{cfg.xai.split}.json"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cfg: DictConfig) -> dict[str, float]:
    xc = cfg.xai
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    precision = Precision.of(xc)
    model, ckpt = load_model(xc.checkpoint, device)
    model = precision.prepare(model, device)
    names = list(ckpt["class_names"])
    cam = build_cam(cfg, model)
    dataset = SegmentationDataset(cfg.data.processed_dir, xc.split, instantiate(xc.transform))
    count = len(dataset) if xc.max_images is None else min(len(dataset), int(xc.max_images))
    batch_size = int(xc.batch_size)
    if batch_size < 1:
        raise ValueError(f"xai.batch_size must be >= 1, got {batch_size}")
    method_dir = Path(xc.maps_dir) / xc.name
    figures_dir = Path(xc.figures_dir)
    # Built beside and swapped in whole: an interrupted run leaves the previous maps as they were,
    # never some maps of another model under an explain.json that names the old one.
    with staged_files(figures_dir) as drawing, atomic_dir(method_dir) as building:
        images_meta = _explain_all(cfg, model, cam, names, dataset, count, precision, device, building, drawing)
        checkpoint_hash = file_hash(xc.checkpoint)
        write_meta(building, {
            "method": xc.name, "engine": xc.engine, "target": xc.target, "target_layer": xc.target_layer,
            "split": xc.split, "checkpoint": str(xc.checkpoint), "checkpoint_hash": checkpoint_hash,
            "device": device_name(device), "precision": precision.describe(device), "batch_size": batch_size,
            "images": images_meta,
        })
    mlflow.set_tags({"xai_method": xc.name, "xai_engine": xc.engine, "xai_target": xc.target,
                     "checkpoint": str(xc.checkpoint), "checkpoint_hash": checkpoint_hash,
                     "device": device_name(device), "precision": precision.describe(device),
                     "maps_dir": str(method_dir)})
    if figures_dir.is_dir():
        mlflow.log_artifacts(str(figures_dir), artifact_path="figures")
    times = [m["seconds"] for m in images_meta.values() if m["classes"]]
    units_total = sum(len(m["classes"]) for m in images_meta.values())
    log.info("explain %s (%s engine): %d images, %d units, median %.3f s/image -> %s", xc.name, xc.engine,
             count, units_total, float(np.median(times)) if times else float("nan"), method_dir)
    return {"images": float(count), "units": float(units_total),
            **({"time": float(np.median(times))} if times else {})}


def _explain_all(cfg: DictConfig, model: torch.nn.Module, cam: BaseCAM, names: list[str],
                 dataset: SegmentationDataset, count: int, precision: Precision, device: torch.device,
                 maps_dir: Path, figures_dir: Path) -> dict[str, dict]:
    """Explain the first `count` images of `dataset`: each image's maps to `maps_dir/<stem>.npz`,
    the first `xai.figures` images with units drawn to `figures_dir`; returns explain.json's
    `images` (classes, seconds and skipped units per image)."""
    xc = cfg.xai
    batch_size = int(xc.batch_size)
    images_meta: dict[str, dict] = {}
    drawn = 0
    for start in progress(range(0, count, batch_size), desc=f"explain {xc.name}", disable=not xc.progress):
        items = [dataset[i] for i in range(start, min(count, start + batch_size))]
        images = precision.inputs(torch.stack([it[0] for it in items]), device)
        gts = torch.stack([it[1] for it in items]).to(device)
        with torch.no_grad(), precision.context(device):
            preds = predicted_classes(model_logits(model, images))  # also warms the model before the clock
        units, skipped = [], []
        for n in range(len(items)):
            found, skip = select_units(gts[n], preds[n], xc.target)
            units += [Unit(n, c, mask) for c, mask in found]
            skipped.append(skip)
        _sync(device)
        t0 = time.perf_counter()
        with precision.context(device):
            maps = cam(images, units)
        _sync(device)
        seconds = (time.perf_counter() - t0) / len(items)
        maps_np = maps.detach().cpu().numpy().astype(np.float32)
        for n, (_, _, stem) in enumerate(items):
            mine = [(names[u.class_id], maps_np[i]) for i, u in enumerate(units) if u.index == n]
            save_maps(maps_dir / f"{stem}.npz", dict(mine), durable=False)  # the folder is fsynced whole
            images_meta[stem] = {"classes": [name for name, _ in mine], "seconds": seconds,
                                 "skipped": {CLASS_NAMES[c]: why for c, why in skipped[n].items()}}
            if mine and drawn < int(xc.figures):
                save_cam_figure(figures_dir / f"{stem}.png", to_rgb(images[n]), gts[n].cpu().numpy(),
                                preds[n].cpu().numpy(), mine, method=label(xc.name),
                                title=f"{label(xc.name)} on {xc.split} image {stem} (target: {xc.target} mask)")
                drawn += 1
    return images_meta
