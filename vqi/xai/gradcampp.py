"""Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19), as pytorch-grad-cam computes it (eps 1e-6)."""
from __future__ import annotations

import torch

from vqi.xai.base import GradientCAM


class GradCAMPlusPlus(GradientCAM):
    name = "gradcampp"

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads ** 2
        g3 = g2 * grads
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_acts * g3 + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        return (grads.clamp_min(0) * aij).sum(dim=(2, 3))
