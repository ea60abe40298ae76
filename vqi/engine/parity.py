"""Mixed-precision parity: one model's float32 and autocast outputs on the same inputs.

The numbers a mixed-precision inference path states beside its speed: the largest difference of
any pixel's class probability, the share of pixels whose predicted class is unchanged, and the
mean IoU of the autocast prediction against the float32 one (per class present in either); for
an explanation method, the largest and mean difference of its maps.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vqi.xai.base import BaseCAM
from vqi.xai.targets import Unit, model_logits
from vqi.engine.prediction import predicted_classes


@torch.no_grad()
def amp_parity(model: nn.Module, images: torch.Tensor, dtype: torch.dtype) -> dict[str, float]:
    """Compare `model` in float32 with `model` under `dtype` autocast on the images' device."""
    model.eval()
    ref = model_logits(model, images).float()
    with torch.autocast(images.device.type, dtype=dtype):
        low = model_logits(model, images).float()
    ref_pred, low_pred = predicted_classes(ref), predicted_classes(low)
    ious = []
    for c in range(ref.shape[1]):
        a, b = ref_pred == c, low_pred == c
        union = int((a | b).sum())
        if union:
            ious.append(int((a & b).sum()) / union)
    return {"max_prob_diff": float((ref.softmax(1) - low.softmax(1)).abs().max()),
            "pixel_agreement": float((ref_pred == low_pred).float().mean()),
            "miou_vs_float32": float(sum(ious) / len(ious))}


def map_parity(cam: BaseCAM, images: torch.Tensor, units: Sequence[Unit], dtype: torch.dtype) -> dict[str, float]:
    """Compare `cam`'s maps in float32 with its maps under `dtype` autocast on the images' device:
    the largest and the mean absolute difference of any map value (maps lie in [0, 1])."""
    ref = cam(images, units).detach().float()
    with torch.autocast(images.device.type, dtype=dtype):
        low = cam(images, units).detach().float()
    gap = (ref - low).abs()
    return {"max_map_diff": float(gap.max()), "mean_map_diff": float(gap.mean())}
