"""Evaluation units and explanation targets (docs/metrics.md, "Units" and "Target").

A unit is (image, foreground class c) with |G_c| > 0 and |T_c| > 0, where T_c is the target
mask: the predicted mask P_c (`target="pred"`, default) or the ground truth G_c (`"gt"`).
The score a method explains is s_c = sum_{p in T_c} z_c(p) (pytorch-grad-cam's
`SemanticSegmentationTarget`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from vqi.classes import FOREGROUND_IDS

TARGETS = ("pred", "gt")

SKIP_NOT_IN_GT = "predicted_not_in_gt"
"""|T_c| > 0 but |G_c| = 0: the model sees a class the annotation lacks (no plausibility possible)."""
SKIP_NOT_PREDICTED = "in_gt_not_predicted"
"""|G_c| > 0 but |T_c| = 0: nothing to explain (the class was missed)."""


@dataclass(frozen=True)
class Unit:
    """One (image, class) to explain: `index` into the image batch, class id, target mask (H x W bool)."""

    index: int
    class_id: int
    mask: torch.Tensor


def model_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """N x C x H x W logits; torchvision segmentation models return a dict with `out`."""
    out = model(images)
    return out["out"] if isinstance(out, Mapping) else out


def select_units(gt: torch.Tensor, pred: torch.Tensor, target: str = "pred",
                 classes: Sequence[int] = FOREGROUND_IDS) -> tuple[list[tuple[int, torch.Tensor]], dict[int, str]]:
    """The units of one image: `[(class_id, target mask)]` and `{class_id: skip reason}`.

    `gt` and `pred` are H x W class-index tensors (gt may hold 255 = ignore).
    """
    if target not in TARGETS:
        raise ValueError(f"xai.target: expected one of {TARGETS}, got {target!r}")
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {tuple(gt.shape)} and prediction {tuple(pred.shape)} differ in size")
    units, skipped = [], {}
    for c in classes:
        g = gt == c
        t = g if target == "gt" else pred == c
        has_g, has_t = bool(g.any()), bool(t.any())
        if has_g and has_t:
            units.append((int(c), t))
        elif has_t:
            skipped[int(c)] = SKIP_NOT_IN_GT
        elif has_g:
            skipped[int(c)] = SKIP_NOT_PREDICTED
    return units, skipped


def target_scores(logits: torch.Tensor, units: Sequence[Unit]) -> tuple[torch.Tensor, list[int]]:
    """Scores s_c of every unit's image for every class any unit asks for: (N x J, class ids).

    Entry (n, j) is the masked logit sum of class `classes[j]` over image n's target mask of that
    class (zero where image n has no unit of that class). Images never mix in a segmentation
    model in eval mode, so the gradient of column j's sum gives every image's own gradient.
    """
    classes = sorted({u.class_id for u in units})
    col = {c: j for j, c in enumerate(classes)}
    logits = logits.float()   # sums over thousands of pixels: float32 even under autocast (a no-op in float32)
    masks = logits.new_zeros((logits.shape[0], len(classes), *logits.shape[2:]))
    for u in units:
        masks[u.index, col[u.class_id]] = u.mask.to(masks.dtype)
    return (logits[:, classes] * masks).sum(dim=(2, 3)), classes
