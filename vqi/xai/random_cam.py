"""Random-CAM: the floor every method must beat (docs/metrics.md, "Trusting the
explanations"). L = ReLU(sum_k w_k A^k) with w_k ~ U(-1, 1) per channel, then the usual
normalisation and resize: a map built from the model's own activations but blind to the class.

The weights are seeded and depend only on (seed, class id, the image's pixels), so a rerun, a
different batch size or another position in the batch gives the same map.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import nn

from vqi.models.sparse_conv import tap_sparse_if_enabled as tap_sparse   # train.tap_sparse, off by default
from vqi.xai.base import BaseCAM, _single, capture, float32_math, frozen, scale_cams
from vqi.xai.targets import Unit, model_logits


def unit_seed(seed: int, class_id: int, image: torch.Tensor) -> int:
    """A 63-bit seed from the config seed, the class and the image's float32 bytes."""
    pixels = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    digest = hashlib.sha256(f"{int(seed)}:{int(class_id)}:".encode() + hashlib.sha256(pixels).digest())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def random_weights(seed: int, channels: int) -> torch.Tensor:
    """`channels` weights drawn from U(-1, 1) by a CPU generator seeded with `seed` (float64)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(channels, generator=generator, dtype=torch.float64) * 2 - 1


class RandomCAM(BaseCAM):
    name = "random_cam"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, seed: int = 0):
        super().__init__(model, target_layer)
        self.seed = int(seed)

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        with torch.no_grad(), frozen(self.model), tap_sparse(self.model), capture(self.layer, as_leaf=False) as outs:
            model_logits(self.model, images)
        acts = _single(outs, self.layer).float()
        weights = torch.stack([random_weights(unit_seed(self.seed, u.class_id, images[u.index]), acts.shape[1])
                               for u in units]).to(acts.device, acts.dtype)
        with float32_math(acts):
            cams = torch.einsum("uk,ukhw->uhw", weights, acts[[u.index for u in units]])
            return scale_cams(cams, tuple(images.shape[2:]))
