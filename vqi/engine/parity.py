"""Mixed-precision parity: one model's float32 and autocast outputs on the same inputs.

The numbers a mixed-precision inference path states beside its speed: the largest difference of
any pixel's class probability, the share of pixels whose predicted class is unchanged, and the
mean IoU of the autocast prediction against the float32 one (per class present in either).
"""
from __future__ import annotations

import torch
from torch import nn

from vqi.xai.targets import model_logits


@torch.no_grad()
def amp_parity(model: nn.Module, images: torch.Tensor, dtype: torch.dtype) -> dict[str, float]:
    """Compare `model` in float32 with `model` under `dtype` autocast on the images' device."""
    model.eval()
    ref = model_logits(model, images).float()
    with torch.autocast(images.device.type, dtype=dtype):
        low = model_logits(model, images).float()
    ref_pred, low_pred = ref.argmax(1), low.argmax(1)
    ious = []
    for c in range(ref.shape[1]):
        a, b = ref_pred == c, low_pred == c
        union = int((a | b).sum())
        if union:
            ious.append(int((a & b).sum()) / union)
    return {"max_prob_diff": float((ref.softmax(1) - low.softmax(1)).abs().max()),
            "pixel_agreement": float((ref_pred == low_pred).float().mean()),
            "miou_vs_float32": float(sum(ious) / len(ious))}
