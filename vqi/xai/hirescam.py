"""HiResCAM (Draelos & Carin 2020): the element-wise product of gradient and activation, summed."""
from __future__ import annotations

import torch

from vqi.xai.base import GradientCAM


class HiResCAM(GradientCAM):
    name = "hirescam"

    def cam_image(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * acts).sum(dim=1)
