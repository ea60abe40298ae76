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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from vqi.classes import CLASS_NAMES  # noqa: E402
from vqi.data.dataset import SegmentationDataset, read_mask  # noqa: E402
from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vqi.engine.confusion import ConfusionMatrix  # noqa: E402
from vqi.engine.train_loop import evaluate  # noqa: E402
from vqi.models.checkpoint import load_model  # noqa: E402
from vqi.utils.atomic import atomic_path, write_json  # noqa: E402
from vqi.utils.device import resolve_device  # noqa: E402
from vqi.viz.overlay import overlay  # noqa: E402

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"test-{cfg.experiment_name}-{cfg.train.tag}-{cfg.test.split}"


def run(cfg: DictConfig) -> dict[str, float]:
    tc = cfg.test
    device = resolve_device(cfg.device)
    model, ckpt = load_model(tc.checkpoint, device)
    if tc.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dataset = SegmentationDataset(cfg.data.processed_dir, tc.split, instantiate(tc.transform))
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=False, num_workers=tc.num_workers)
    out_dir = Path(tc.output_dir)
    drawn: list[Path] = []

    truth_dir = Path(cfg.data.processed_dir) / "masks_truth" / tc.split
    truth_cm = ConfusionMatrix(len(CLASS_NAMES)) if truth_dir.is_dir() else None

    def on_batch(images: torch.Tensor, masks: torch.Tensor, preds: torch.Tensor, stems: list[str]) -> None:
        for image, mask, pred, stem in zip(images, masks, preds, stems):
            if len(drawn) < tc.overlays:
                drawn.append(_save_overlay(out_dir / "overlays" / f"{stem}.png", image, mask, pred))
            if truth_cm is not None:
                truth_cm.update(torch.from_numpy(read_mask(truth_dir / f"{stem}.png", tuple(pred.shape))), pred)

    cm = evaluate(model, loader, device, len(CLASS_NAMES), amp=tc.amp, amp_dtype=str(tc.amp_dtype),
                  channels_last=bool(tc.channels_last), on_batch=on_batch, progress=bool(cfg.train.progress))
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
    _save_confusion(out_dir / "confusion.png", cm)
    mlflow.set_tags({"checkpoint": str(tc.checkpoint), "split": tc.split,
                     "checkpoint_epoch": str(ckpt["epoch"])})
    mlflow.log_artifacts(str(out_dir), artifact_path="test")
    return metrics


def _denormalise(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255).round().astype(np.uint8)


def _save_overlay(path: Path, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> Path:
    rgb = _denormalise(image)
    panels = [("image", rgb), ("ground truth", overlay(rgb, mask.numpy().astype(np.uint8))),
              ("prediction", overlay(rgb, pred.numpy().astype(np.uint8)))]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, (title, panel) in zip(axes, panels):
        ax.imshow(panel)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(path.stem)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _save_confusion(path: Path, cm: ConfusionMatrix) -> None:
    """Row-normalised confusion matrix (rows: ground truth), with pixel counts in each cell."""
    mat = cm.mat.double()
    rows = mat / mat.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    names = CLASS_NAMES[:cm.num_classes]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n{int(mat[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="share of the ground-truth row")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
