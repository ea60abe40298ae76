"""IMPACTX's own explanation (docs/metrics.md, "IMPACTX"): the map the model's explanation branch
predicts for the unit's class, min-max normalised as every method's map is. One inference
forward per batch, no gradient, no target layer; the target mask T_c does not enter (the branch
was trained to draw the teacher's map of class c for the image as a whole).

Only a model trained with `train.impactx.enabled=true` has the branch; any other is refused with
an error naming `checkpoint` (the file the model came from).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vqi.models.impactx import ImpactX
from vqi.xai.base import BaseCAM, float32_math, scale_cams
from vqi.xai.targets import Unit


class ImpactXCAM(BaseCAM):
    name = "impactx"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, checkpoint: str = "the model"):
        if not isinstance(model, ImpactX):
            raise ValueError(f"xai=impactx: {checkpoint} holds a {type(model).__name__} without an explanation "
                             "branch; xai=impactx explains a model trained with train.impactx.enabled=true "
                             "(point xai.checkpoint at such a training's best.pt, or choose another xai method)")
        super().__init__(model, target_layer)

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        with torch.no_grad():
            predicted = self.model(images)["explanation"]
        picked = torch.stack([predicted[u.index, u.class_id - 1] for u in units])
        with float32_math(picked):
            return scale_cams(picked, tuple(images.shape[2:]))
