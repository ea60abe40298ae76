"""The reference engine (`xai.engine=library`): pytorch-grad-cam itself, one call per unit.

Each unit runs the library's own method class with `SemanticSegmentationTarget(c, T_c)` on its
image, exactly as the paper's authors' code does. Slow (a forward and a full backward per unit
and method) but the yardstick the fast engine is tested against.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn

from vqi.xai.base import BaseCAM
from vqi.xai.targets import Unit, model_logits


class _LogitsOnly(nn.Module):
    """pytorch-grad-cam expects a tensor output, torchvision segmentation models return a dict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model, x)


class LibraryCAM(BaseCAM):
    """pytorch-grad-cam's class `method` (e.g. "GradCAMPlusPlus") behind the engine's interface."""

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, method: str,
                 batch_size: int = 16):
        super().__init__(model, target_layer)
        if not isinstance(getattr(pytorch_grad_cam, method, None), type):
            raise ValueError(f"xai.library_method: pytorch_grad_cam has no CAM class {method!r}")
        self.method = getattr(pytorch_grad_cam, method)
        self.name = method
        self.batch_size = int(batch_size)

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        cam = self.method(model=_LogitsOnly(self.model), target_layers=[self.layer])
        cam.batch_size = self.batch_size  # read by ScoreCAM only
        try:  # not `with`: the library's __exit__ swallows IndexError
            out = [cam(images[u.index:u.index + 1],
                       targets=[SemanticSegmentationTarget(u.class_id, u.mask.float().cpu().numpy())])[0]
                   for u in units]
        finally:
            cam.activations_and_grads.release()
        return torch.from_numpy(np.stack(out)).to(images.device)
