"""XGrad-CAM (Fu et al. 2020): gradients weighted by the activations' share of their channel sum."""
from __future__ import annotations

import torch

from vqi.xai.base import GradientCAM


class XGradCAM(GradientCAM):
    name = "xgradcam"

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        return (grads * acts / (sum_acts + 1e-7)).sum(dim=(2, 3))
