"""Grad-CAM (Selvaraju et al. 2017): channel weight = spatial mean of the gradient."""
from __future__ import annotations

import torch

from vqi.xai.base import GradientCAM


class GradCAM(GradientCAM):
    name = "gradcam"

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))
