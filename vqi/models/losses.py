"""Segmentation losses on logits `(N, C, H, W)` and targets `(N, H, W)` with an ignore index.

`DiceLoss` is the paper's soft multi-class Dice over the softmax; `GeneralizedDiceLoss` is
Sudre et al. 2017; `CrossEntropyLoss` and `DiceCELoss` are the usual alternatives.
`reconstruction_loss` is IMPACTX's explanation term (docs/metrics.md, "IMPACTX").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqi.classes import IGNORE_INDEX


def _probs_and_onehot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot targets, both zeroed on ignored pixels, shape (C, P)."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    if safe.numel() and int(safe.max()) >= num_classes:
        raise ValueError(f"target holds class {int(safe.max())} but the logits have {num_classes} classes")
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    mask = valid.unsqueeze(1).to(probs.dtype)
    flat = lambda t: (t * mask).transpose(0, 1).reshape(num_classes, -1)  # noqa: E731
    return flat(probs), flat(onehot)


class DiceLoss(nn.Module):
    """`1 - mean_c (2·Σ p·g + s) / (Σ p + Σ g + s)`, sums over every valid pixel of the batch.

    `smooth` (s) keeps a class absent from target and prediction at Dice 1 instead of 0/0.
    """

    def __init__(self, smooth: float = 1.0, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = _probs_and_onehot(logits, target, self.ignore_index)
        dice = (2 * (p * g).sum(1) + self.smooth) / (p.sum(1) + g.sum(1) + self.smooth)
        return 1 - dice.mean()


class GeneralizedDiceLoss(nn.Module):
    """Sudre et al. 2017: `1 - 2·Σ_c w_c Σ p·g / Σ_c w_c Σ (p + g)`, `w_c = 1 / (Σ g_c)²`.

    A class absent from the target would get an infinite weight; like MONAI we give it the
    largest finite weight instead, so its false positives still count.
    """

    def __init__(self, smooth: float = 1e-5, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = _probs_and_onehot(logits, target, self.ignore_index)
        counts = g.sum(1)
        w = 1.0 / counts.square()
        finite = torch.isfinite(w)
        w = torch.where(finite, w, w[finite].max() if finite.any() else torch.ones_like(w))
        numer = 2 * (w * (p * g).sum(1)).sum() + self.smooth
        denom = (w * (p.sum(1) + g.sum(1))).sum() + self.smooth
        return 1 - numer / denom


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Pixel-wise cross entropy that skips the ignore index (computed in float32)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__(ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.float(), target)


class DiceCELoss(nn.Module):
    """`dice_weight · Dice + ce_weight · CE`."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1.0,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.dice, self.ce = DiceLoss(smooth, ignore_index), CrossEntropyLoss(ignore_index)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(logits, target)


def reconstruction_loss(predicted: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """IMPACTX's map reconstruction loss: the mean squared error between the predicted maps and the
    teacher's (both N x (K-1) x H x W, in [0, 1]) over the entries that have a teacher value. NaN in
    `teacher` means none: a class the image has no map of, or a pixel the training crop padded.
    Zero (still a graph node) when no entry has a value."""
    if predicted.shape != teacher.shape:
        raise ValueError(f"predicted maps {tuple(predicted.shape)} and teacher maps {tuple(teacher.shape)} differ")
    known = ~torch.isnan(teacher)
    squared = (predicted.float()[known] - teacher[known].float()) ** 2
    return squared.sum() / known.sum().clamp_min(1)
