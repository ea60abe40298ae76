"""Ensemble: the mean of several methods' normalised maps (each in [0, 1], so the mean is too).

Members are partials taking `(model, target_layer)`; the gradient-based ones share one forward
pass and its VJPs (`gradient_maps`), the others run on their own. The mean is not re-normalised:
a pixel only every member highlights stays near 1, one highlighted by a single member drops.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from vqi.xai.base import BaseCAM, GradientCAM, gradient_maps
from vqi.xai.targets import Unit


class EnsembleCAM(BaseCAM):
    name = "ensemble"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module,
                 members: Sequence[Callable[..., BaseCAM]] = ()):
        super().__init__(model, target_layer)
        if not members:
            raise ValueError("xai.method.members: the ensemble needs at least one method")
        self.members = [m(model=model, target_layer=self.layer) for m in members]
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"xai.method.members: each method at most once, got {names}")

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        grads = [m for m in self.members if isinstance(m, GradientCAM)]
        shared = gradient_maps(grads, images, units)
        total = sum(shared.values()) if shared else 0
        for m in self.members:
            if not isinstance(m, GradientCAM):
                total = total + m(images, units)
        return total / len(self.members)
