"""IMPACTX (Apicella et al.; docs/metrics.md, "IMPACTX"): a segmentation model with an explanation
branch that learns to predict a teacher CAM method's maps and feeds its encoding back into the
prediction, so that after training the model explains itself.

`ImpactX` wraps a torchvision segmentation model (DeepLabv3 or LR-ASPP) and leaves it as it is:
- LEP (`encoder`): a 1x1 convolution, BatchNorm and a sigmoid on the wrapped model's last backbone
  features (DeepLabv3's `out`, LR-ASPP's `high`) give the encoding z: E channels at that stride
  (a 3x3 convolution from the 960 or 2048 channels costs about as much as several backbone layers).
- D (`decoder`): from z alone, two 3x3 convolution-BatchNorm-ReLU blocks around a x2 upsampling
  and a 1x1 convolution give one map per foreground class, resized to the input and squashed into
  (0, 1) by a sigmoid; class c's map is channel c - 1. (Without the BatchNorms the known-answer
  fit of tests/test_impactx.py failed on 1 of 4 seeds: 2% of a map's mass in its square, not 90%.)
- C (`join_logits`, `join_encoding`): the logits become `join_logits(m) + up(join_encoding(z))`,
  i.e. one 1x1 convolution of the concatenation [m, up(z)] of the wrapped model's logits m and the
  bilinearly upsampled encoding (written as two, so z is projected to the class count before it is
  upsampled: upsampling is linear, the result is the same). Initialised to [identity, 0], so the
  untrained wrapper predicts exactly what the wrapped model predicts.
The backbone's features are taken by a forward hook during the wrapped model's own forward pass
(one backbone pass). `backbone` and `classifier` stay reachable under their own names, so CAM
target layers (`backbone.15`) and the sanity check's cascade address the same modules as in the
plain model. The output is the wrapped model's dict with `out` replaced by C's logits and
`explanation` (N x (K-1) x H x W) added.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DECODER_CHANNELS = 32
"""Width of the decoder's hidden convolutions (the maps it draws are smooth CAM maps)."""


def _conv_bn_relu(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


def last_feature_channels(backbone: nn.Module) -> int:
    """Channels of the backbone's last features: the output channels of its last convolution
    (ResNet's layer4: 2048, MobileNetV3's final 1x1: 960)."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(backbone).__name__} has no convolution to read the feature channels from")
    return convs[-1].out_channels


def last_features(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """The backbone's last features from its output dict: DeepLabv3 names them `out`, LR-ASPP `high`."""
    for key in ("out", "high"):
        if key in features:
            return features[key]
    raise KeyError(f"backbone output has neither `out` nor `high` features (keys: {', '.join(features)})")


class ImpactX(nn.Module):
    """A torchvision segmentation model with IMPACTX's explanation branch (LEP, D) and joint classifier C."""

    def __init__(self, segmenter: nn.Module, num_classes: int, channels: int = 64):
        super().__init__()
        if channels < 1 or num_classes < 2:
            raise ValueError(f"ImpactX needs >= 1 encoding channel and >= 2 classes, got {channels} and {num_classes}")
        self.segmenter = segmenter
        self.encoder = nn.Sequential(
            nn.Conv2d(last_feature_channels(segmenter.backbone), channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.Sigmoid())
        self.decoder = nn.Sequential(
            *_conv_bn_relu(channels, DECODER_CHANNELS),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *_conv_bn_relu(DECODER_CHANNELS, DECODER_CHANNELS),
            nn.Conv2d(DECODER_CHANNELS, num_classes - 1, 1))
        self.join_logits = nn.Conv2d(num_classes, num_classes, 1)
        self.join_encoding = nn.Conv2d(channels, num_classes, 1, bias=False)
        with torch.no_grad():
            self.join_logits.weight.copy_(torch.eye(num_classes)[:, :, None, None])
            self.join_logits.bias.zero_()
            self.join_encoding.weight.zero_()

    @property
    def backbone(self) -> nn.Module:
        return self.segmenter.backbone

    @property
    def classifier(self) -> nn.Module:
        return self.segmenter.classifier

    @property
    def explanation_branch(self) -> list[nn.Module]:
        """The modules that draw the maps (LEP's encoder and the decoder D): the sanity check's first step."""
        return [self.encoder, self.decoder]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: list[Any] = []
        handle = self.segmenter.backbone.register_forward_hook(lambda module, args, out: captured.append(out))
        try:
            out = dict(self.segmenter(x))
        finally:
            handle.remove()
        size = x.shape[-2:]
        z = self.encoder(last_features(captured[-1]))
        maps = torch.sigmoid(F.interpolate(self.decoder(z), size=size, mode="bilinear", align_corners=False))
        encoding = F.interpolate(self.join_encoding(z), size=size, mode="bilinear", align_corners=False)
        out["out"] = self.join_logits(out["out"]) + encoding
        out["explanation"] = maps
        return out
