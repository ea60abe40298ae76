"""stage=test: a checkpoint on a split -> per-class IoU, confusion matrix figure, overlays.

Config keys read: `device`, `data.processed_dir`, `test.{checkpoint, split, batch_size,
num_workers, amp, amp_dtype, channels_last, overlays, transform, output_dir}`. IoU follows docs/metrics.md
"Segmentation quality": one confusion matrix over the whole split, 255 ignored, predicted
`perplexed` counted as background; Overall = mean IoU of the four foreground classes.
When the split has true masks (`masks_truth/<split>/`, generated data), the same predictions are
also scored against the truth: metrics `truth/iou_*`, beside the usual ones (the paper's protocol,
against the annotated labels).
Writes `metrics.json`, `confusion.png` and `overlays/<stem>.png` to `test.output_dir` and logs them.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import mlflow
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vqi.classes import CLASS_NAMES
from vqi.data.dataset import SegmentationDataset, read_mask
from vqi.engine.confusion import ConfusionMatrix
from vqi.engine.precision import Precision
from vqi.engine.train_loop import evaluate
from vqi.models.checkpoint import load_model
from vqi.reporting.charts import save_confusion_figure
from vqi.reporting.figures import save_overlay_figure, to_rgb
from vqi.utils.atomic import write_json
from vqi.utils.device import resolve_device

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"test-{cfg.experiment_name}-{cfg.train.tag}-{cfg.test.split}"


def run(cfg: DictConfig) -> dict[str, float]:
    tc = cfg.test
    device = resolve_device(cfg.device)
    precision = Precision.of(tc)
    model, ckpt = load_model(tc.checkpoint, device)
    model = precision.prepare(model, device)
    dataset = SegmentationDataset(cfg.data.processed_dir, tc.split, instantiate(tc.transform))
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=False, num_workers=tc.num_workers)
    out_dir = Path(tc.output_dir)
    drawn: list[Path] = []

    title = _title(cfg, ckpt)
    truth_dir = Path(cfg.data.processed_dir) / "masks_truth" / tc.split
    truth_cm = ConfusionMatrix(len(CLASS_NAMES)) if truth_dir.is_dir() else None

    def on_batch(images: torch.Tensor, masks: torch.Tensor, preds: torch.Tensor, stems: list[str]) -> None:
        for image, mask, pred, stem in zip(images, masks, preds, stems):
            if len(drawn) < tc.overlays:
                drawn.append(save_overlay_figure(out_dir / "overlays" / f"{stem}.png", to_rgb(image), mask.numpy(),
                                                 pred.numpy(), title=f"{stem}: {title}"))
            if truth_cm is not None:
                truth_cm.update(torch.from_numpy(read_mask(truth_dir / f"{stem}.png", tuple(pred.shape))), pred)

    cm = evaluate(model, loader, device, len(CLASS_NAMES), precision=precision, on_batch=on_batch, progress=bool(cfg.train.progress))
    metrics = cm.metrics()
    if truth_cm is not None:
        metrics.update({f"truth/{k}": v for k, v in truth_cm.metrics().items()})
    log.info("test on %s (%d images) with %s: %s", tc.split, len(dataset), tc.checkpoint,
             ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    write_json(out_dir / "metrics.json", {
        "checkpoint": str(tc.checkpoint), "epoch": ckpt["epoch"], "split": tc.split,
        "images": len(dataset), "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
        "confusion_matrix": cm.mat.tolist(), "class_names": list(CLASS_NAMES),
        "truth_confusion_matrix": truth_cm.mat.tolist() if truth_cm is not None else None,
    })
    save_confusion_figure(out_dir / "confusion.png", cm.mat.numpy(), CLASS_NAMES[:cm.num_classes],
                          title=f"Confusion matrix in pixels, rows = ground truth\n{title}, {len(dataset)} images")
    mlflow.set_tags({"checkpoint": str(tc.checkpoint), "split": tc.split,
                     "checkpoint_epoch": str(ckpt["epoch"])})
    mlflow.log_artifacts(str(out_dir), artifact_path="test")
    return metrics


def _title(cfg: DictConfig, ckpt: dict) -> str:
    """Which model (architecture, checkpoint, epoch) on which split, for every figure of the run."""
    model = (ckpt.get("model_config") or {}).get("arch", "model")
    where = Path(cfg.test.checkpoint)
    return f"{model} ({where.parent.name}/{where.name}, epoch {ckpt['epoch']}) on split '{cfg.test.split}'"
