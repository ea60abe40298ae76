"""Segmentation quality from one confusion matrix over a whole split (docs/metrics.md).

Rows are ground truth, columns prediction. Pixels labelled 255 are ignored; class 5
(`perplexed`, only in augmented training sets) counts as background in both.
`IoU_c = TP / (TP + FP + FN)`, NaN for a class absent from both; Overall = nanmean of the
foreground classes 1..4; background IoU and the 5-class mIoU are reported beside it.
"""
from __future__ import annotations

import math

import torch

from vqi.classes import BACKGROUND, CLASS_NAMES, FOREGROUND_IDS, IGNORE_INDEX, PERPLEXED


class ConfusionMatrix:
    """Accumulates `(target, prediction)` pixel pairs; `update` per batch, `metrics()` at the end."""

    def __init__(self, num_classes: int = len(CLASS_NAMES), ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        target, pred = target.reshape(-1).long().cpu(), pred.reshape(-1).long().cpu()
        target = torch.where(target == PERPLEXED, BACKGROUND, target)
        pred = torch.where(pred == PERPLEXED, BACKGROUND, pred)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        bad = (target < 0) | (target >= self.num_classes) | (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            raise ValueError(f"class ids outside 0..{self.num_classes - 1} (and {self.ignore_index}): "
                             f"{sorted(set(target[bad].tolist()) | set(pred[bad].tolist()))[:5]}")
        self.mat += torch.bincount(target * self.num_classes + pred,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def iou(self) -> torch.Tensor:
        """Per-class IoU as float64, NaN where the class is absent from target and prediction."""
        mat = self.mat.double()
        tp = mat.diag()
        union = mat.sum(0) + mat.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def metrics(self, class_names: tuple[str, ...] | list[str] = CLASS_NAMES) -> dict[str, float]:
        """`iou_<name>` per class, `iou_overall` (foreground nanmean), `iou_background`, `miou_5`."""
        iou = self.iou()
        out = {f"iou_{name}": float(iou[i]) for i, name in enumerate(class_names[:self.num_classes])}
        out["iou_overall"] = float(_nanmean(iou[list(FOREGROUND_IDS)]))
        out["iou_background"] = float(iou[BACKGROUND])
        out["miou_5"] = float(_nanmean(iou[:len(CLASS_NAMES)]))
        total = self.mat.sum()
        out["pixel_accuracy"] = float(self.mat.diag().sum() / total) if total else math.nan
        return out


def _nanmean(values: torch.Tensor) -> torch.Tensor:
    finite = values[~values.isnan()]
    return finite.mean() if finite.numel() else torch.tensor(math.nan, dtype=values.dtype)
