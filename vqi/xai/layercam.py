"""LayerCAM (Jiang et al. 2021): activations weighted element-wise by the positive gradient."""
from __future__ import annotations

import torch

from vqi.xai.base import GradientCAM


class LayerCAM(GradientCAM):
    name = "layercam"

    def cam_image(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.clamp_min(0) * acts).sum(dim=1)
