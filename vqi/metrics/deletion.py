"""Deletion and insertion curves (Petsiuk et al. 2018; docs/metrics.md): pixels ordered
by L_c, highest first (ties: stable sort, raster order). At step s = 0..S the first s·N // S
pixels (N = H·W) are taken from a blurred copy of x (deletion) or, starting from the blurred copy,
from x (insertion); each point is conf_c of that input over T_c, divided by conf_c(x).
AUC = trapezoid over [0, 1], in %: deletion lower is better, insertion higher.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from vqi.metrics.faithfulness import confidences
from vqi.models.sparse_conv import tap_sparse_if_enabled as tap_sparse   # train.tap_sparse, off by default


def blur(image: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of a 3 x H x W input, sigma = W / 20 by default, kernel radius ceil(3 sigma)
    (at most min(H, W) - 1, reflect padding)."""
    height, width = image.shape[1:]
    sigma = width / 20 if sigma is None else float(sigma)
    radius = max(1, min(math.ceil(3 * sigma), min(height, width) - 1))
    return TF.gaussian_blur(image[None], [2 * radius + 1] * 2, [sigma, sigma])[0]


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """U x H x W rank of each pixel in its map's order, highest first (0 = removed first)."""
    flat = maps.flatten(1)
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view(maps.shape)


@torch.no_grad()
def curves(model: nn.Module, image: torch.Tensor, maps: torch.Tensor, class_ids: Sequence[int],
           masks: torch.Tensor, steps: int = 32, batch_size: int = 16, sigma: float | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(deletion, insertion) curves, each U x (S + 1), normalised by conf_c(x) (NaN where it is 0).

    `image` 3 x H x W, `maps` U x H x W, target masks U x H x W; `batch_size` perturbed inputs per
    forward pass, whatever U and S.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"deletion: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    class_ids = [int(c) for c in class_ids]
    count = len(class_ids)
    soft = blur(image, sigma)
    ranks = pixel_ranks(maps)
    total = ranks[0].numel() if count else 0
    jobs = [(u, s, kind) for kind in (0, 1) for u in range(count) for s in range(steps + 1)]
    values = torch.empty(2, count, steps + 1, dtype=torch.float64, device=image.device)
    with tap_sparse(model):
        y = confidences(model, image[None].expand(count, -1, -1, -1), class_ids, masks).double() if count else None
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            taken = torch.stack([ranks[u] < s * total // steps for u, s, _ in chunk])[:, None]
            first = torch.stack([soft if kind == 0 else image for _, _, kind in chunk])
            second = torch.stack([image if kind == 0 else soft for _, _, kind in chunk])
            conf = confidences(model, torch.where(taken, first, second), [class_ids[u] for u, _, _ in chunk],
                               masks[[u for u, _, _ in chunk]])
            for (u, s, kind), c in zip(chunk, conf):
                values[kind, u, s] = c
    if not count:
        return values[0], values[1]
    norm = torch.where(y > 0, y, torch.full_like(y, float("nan")))[:, None]
    return values[0] / norm, values[1] / norm


def auc(curves: np.ndarray | torch.Tensor) -> np.ndarray:
    """100 x trapezoid area of each row over [0, 1] (rows of S + 1 evenly spaced points)."""
    c = np.asarray(curves, dtype=np.float64)
    if c.shape[-1] < 2:
        raise ValueError("a curve needs at least two points")
    dx = 1.0 / (c.shape[-1] - 1)
    return 100.0 * dx * (c[..., 1:] + c[..., :-1]).sum(axis=-1) / 2
