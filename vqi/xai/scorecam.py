"""Score-CAM (Wang et al. 2020): channel weight = softmax over channels of the target score of the
input masked by that channel's upsampled, min-max normalised activation.

As pytorch-grad-cam: activations upsampled with `UpsamplingBilinear2d` (align_corners=True),
per-channel min-max with eps 1e-8, softmax of the scores over channels. Unlike it, each masked
forward pass scores every unit (class) of the image at once, at most `batch_size` masked inputs
are built and run at a time (memory ~ one inference forward of `batch_size` images, whatever
the channel count or image size), and no hook is attached during the masked passes, whose
dilated convolutions skip the taps that read only padding (`vqi.models.sparse_conv`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vqi.xai.base import BaseCAM, _single, capture, float32_math, frozen, scale_cams
from vqi.models.sparse_conv import tap_sparse_if_enabled as tap_sparse   # train.tap_sparse, off by default
from vqi.xai.targets import Unit, model_logits


class ScoreCAM(BaseCAM):
    name = "scorecam"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, batch_size: int = 16):
        super().__init__(model, target_layer)
        if int(batch_size) < 1:
            raise ValueError(f"xai.batch_size (ScoreCAM masked inputs per forward) must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def _channel_scores(self, image: torch.Tensor, acts: torch.Tensor, classes: list[int],
                        masks: torch.Tensor) -> torch.Tensor:
        """K x U target scores of `image` masked by each of its K channels (batched, all units at once)."""
        size = tuple(image.shape[1:])
        scores = []
        for start in range(0, acts.shape[0], self.batch_size):
            with float32_math(acts):   # eps 1e-8 and the masked input in float32 under autocast too
                up = F.interpolate(acts[None, start:start + self.batch_size].float(), size=size, mode="bilinear",
                                   align_corners=True)[0]
                flat = up.flatten(1)
                lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
                up = (up - lo) / (hi - lo + 1e-8)
            logits = model_logits(self.model, image[None] * up[:, None])
            with float32_math(logits):   # the softmax over channels amplifies any rounding of the sums
                scores.append(torch.einsum("buhw,uhw->bu", logits[:, classes].float(), masks))
        return torch.cat(scores)

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        with torch.no_grad(), capture(self.layer, as_leaf=False) as outs:
            model_logits(self.model, images)
        acts = _single(outs, self.layer)
        out = images.new_empty((len(units), *images.shape[2:]))
        with torch.no_grad(), frozen(self.model), tap_sparse(self.model):
            for n in sorted({u.index for u in units}):
                mine = [i for i, u in enumerate(units) if u.index == n]
                masks = torch.stack([units[i].mask for i in mine]).to(images.dtype)
                classes = [units[i].class_id for i in mine]
                weights = torch.softmax(self._channel_scores(images[n], acts[n], classes, masks), dim=0)
                with float32_math(weights):
                    cams = torch.einsum("ku,khw->uhw", weights, acts[n].float())
                    out[mine] = scale_cams(cams, tuple(images.shape[2:]))
        return out
