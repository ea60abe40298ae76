"""Faithfulness: does keeping only what the map highlights keep the model's confidence? (in %)

conf_c(x') = mean over T_c of softmax(f(x'))_c, with T_c found on the original image;
O = conf_c(x * L_c) (every channel of the normalised input times the map).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vqi.xai.targets import model_logits


def _mean_over(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of each U x H x W probability map over its target mask."""
    masks = masks.to(probs.dtype)
    return (probs * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2)).clamp_min(1)


def confidences(model: nn.Module, images: torch.Tensor, class_ids: Sequence[int],
                masks: torch.Tensor) -> torch.Tensor:
    """conf_c of each row: `images` U x 3 x H x W, class ids U, target masks U x H x W."""
    probs = torch.softmax(model_logits(model, images), dim=1)
    return _mean_over(probs[torch.arange(len(class_ids)), torch.as_tensor(list(class_ids))], masks)


@torch.no_grad()
def masked_confidences(model: nn.Module, image: torch.Tensor, maps: torch.Tensor,
                       class_ids: Sequence[int], masks: torch.Tensor, batch_size: int = 16
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, O) for the U units of one image: confidence on x and on x * L_c, U masked inputs
    scored `batch_size` at a time (Y from one forward pass of the original image)."""
    if batch_size < 1:
        raise ValueError(f"metrics.batch_size must be >= 1, got {batch_size}")
    class_ids = list(class_ids)
    y = _mean_over(torch.softmax(model_logits(model, image[None]), dim=1)[0, class_ids], masks)
    o = [confidences(model, image[None] * maps[s:s + batch_size, None], class_ids[s:s + batch_size],
                     masks[s:s + batch_size]) for s in range(0, len(class_ids), batch_size)]
    return y, torch.cat(o) if o else y.new_zeros(0)


def drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Per-unit Average Drop term 100 * max(0, Y - O) / Y (0 where Y = 0)."""
    y, o = y.double(), o.double()
    return 100.0 * torch.where(y > 0, (y - o).clamp_min(0) / y.clamp_min(torch.finfo(y.dtype).tiny), 0.0)


def increase(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Per-unit Increase-in-Confidence term 100 * [O > Y]."""
    return 100.0 * (o > y).double()
