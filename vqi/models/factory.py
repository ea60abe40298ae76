"""Building torchvision segmentation models (DeepLabv3, and LR-ASPP for CPUs) for our classes,
with weights that never download.

`weights` / `weights_backbone` take `None`, a torchvision weights name (`"DEFAULT"`,
`"COCO_WITH_VOC_LABELS_V1"` or the full `"DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"`),
or a local file. Named weights are read from torchvision's cache
(`torch.hub.get_dir()/checkpoints`); when the file is not there, `WeightsNotFoundError` says which
file to fetch, from where, and where to put it. Nothing is downloaded, so nothing hangs offline.

`output_stride` 8 turns MobileNetV3's last stride-2 block into dilation, as torchvision's ResNet
variants already are: four times the logits for thin objects, with the same weight tensors.

`explanation_channels` wraps the model in IMPACTX's explanation branch (`vqi.models.impactx`);
None (the default, and every checkpoint written before it existed) builds the plain model.
"""
from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights
from torchvision.models.segmentation import (
    DeepLabV3_MobileNet_V3_Large_Weights,
    DeepLabV3_ResNet50_Weights,
    DeepLabV3_ResNet101_Weights,
    LRASPP_MobileNet_V3_Large_Weights,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
    deeplabv3_resnet101,
    lraspp_mobilenet_v3_large,
)

from vqi.models.impactx import ImpactX
from vqi.models.weights_file import WeightsFileError, read_plain

log = logging.getLogger(__name__)

ARCHS: dict[str, tuple[Callable[..., nn.Module], type[Enum], type[Enum]]] = {
    "deeplabv3_resnet101": (deeplabv3_resnet101, DeepLabV3_ResNet101_Weights, ResNet101_Weights),
    "deeplabv3_resnet50": (deeplabv3_resnet50, DeepLabV3_ResNet50_Weights, ResNet50_Weights),
    "deeplabv3_mobilenet_v3_large": (
        deeplabv3_mobilenet_v3_large, DeepLabV3_MobileNet_V3_Large_Weights, MobileNet_V3_Large_Weights),
    "lraspp_mobilenet_v3_large": (
        lraspp_mobilenet_v3_large, LRASPP_MobileNet_V3_Large_Weights, MobileNet_V3_Large_Weights),
}
"""arch name -> (torchvision builder, segmentation weights enum, backbone weights enum)."""

NATIVE_OUTPUT_STRIDE = {"deeplabv3_resnet101": 8, "deeplabv3_resnet50": 8, "deeplabv3_mobilenet_v3_large": 16,
                        "lraspp_mobilenet_v3_large": 16}
"""Input pixels per cell of the backbone's last features in torchvision's builders (for DeepLabv3,
per logit); the MobileNetV3 models can also be built at 8. LR-ASPP adds its stride-16 features,
upsampled, to stride-8 ones, so its logits are at 8 either way."""


class WeightsNotFoundError(FileNotFoundError):
    """Named weights that are not in torchvision's cache (we never download)."""


def build_model(arch: str = "deeplabv3_resnet101", num_classes: int = 5, weights: str | None = None,
                weights_backbone: str | None = None, aux_loss: bool = False,
                output_stride: int | None = None, explanation_channels: int | None = None) -> nn.Module:
    """A segmentation model with `num_classes` outputs; optional weights for the whole model or the
    backbone. LR-ASPP has no aux head (`aux_loss=True` is refused).

    `output_stride` None keeps the builder's own (`NATIVE_OUTPUT_STRIDE`). `explanation_channels`
    E: the model wrapped by `ImpactX` with an encoding of E channels (the weights fill the wrapped model).

    Whole-model weights fill every tensor whose shape matches (the class head is re-initialised
    when the class count differs); backbone weights fill the backbone only.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}; valid: {', '.join(ARCHS)}")
    builder, seg_enum, backbone_enum = ARCHS[arch]
    if aux_loss and arch.startswith("lraspp"):
        raise ValueError(f"model.aux_loss=true: {arch} has no aux head")
    extra = {} if arch.startswith("lraspp") else {"aux_loss": aux_loss}
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **extra)
    if output_stride not in (None, NATIVE_OUTPUT_STRIDE[arch]):
        if not ("mobilenet" in arch and output_stride == 8):
            raise ValueError(f"model.output_stride={output_stride} is not available for {arch}; "
                             f"it is built at {NATIVE_OUTPUT_STRIDE[arch]} (MobileNetV3 also at 8)")
        _dilate_last_strided_block(model.backbone)
    if weights is not None:
        state = _model_state(_read_weights(weights, seg_enum, "weights"))
        _load_matching(model, state, str(weights))
    if weights_backbone is not None:
        state = _read_weights(weights_backbone, backbone_enum, "weights_backbone")
        _load_backbone(model, state, arch, str(weights_backbone))
    if explanation_channels is not None:
        return ImpactX(model, num_classes, int(explanation_channels))
    return model


def _dilate_last_strided_block(backbone: nn.Module) -> None:
    """Halve the output stride: the last stride-2 spatial conv becomes stride 1, and it and every
    later spatial conv doubles its dilation (padding to match), so receptive fields are kept."""
    blocks = list(backbone.children())
    spatial = [[m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1] for b in blocks]
    first = max(i for i, convs in enumerate(spatial) if any(c.stride[0] == 2 for c in convs))
    for convs in spatial[first:]:
        for conv in convs:
            conv.stride = (1, 1)
            conv.dilation = tuple(2 * d for d in conv.dilation)
            conv.padding = tuple((k - 1) // 2 * d for k, d in zip(conv.kernel_size, conv.dilation))


def _read_weights(spec: str, enum_cls: type[Enum], field: str) -> dict[str, torch.Tensor]:
    path = Path(str(spec)).expanduser()
    if path.is_file():
        state = read_plain(path, f"model.{field}")
        if not isinstance(state, dict) or not any(isinstance(v, (dict, torch.Tensor)) for v in state.values()):
            raise WeightsFileError(f"model.{field}: {path} holds a {type(state).__name__} without tensors, "
                                   f"expected a state_dict (or a checkpoint with a `model` state_dict)")
        return state
    if path.suffix in {".pt", ".pth", ".ckpt"} or "/" in str(spec):
        raise FileNotFoundError(f"model.{field}: weights file {path} does not exist")
    entry = _weights_entry(str(spec), enum_cls, field)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not cached.is_file():
        raise WeightsNotFoundError(
            f"model.{field}={spec} needs {cached.name}, which is not in torchvision's cache and is "
            f"never downloaded at run time. Fetch {entry.url} and put it at {cached} "
            f"(or set model.{field} to a local file, or null)")
    return read_plain(cached, f"model.{field}")


def _weights_entry(name: str, enum_cls: type[Enum], field: str) -> Any:
    short = name.split(".", 1)[1] if name.startswith(enum_cls.__name__ + ".") else name
    try:
        return enum_cls[short]
    except KeyError:
        valid = ", ".join(enum_cls.__members__)
        raise ValueError(f"model.{field}={name!r} is neither a file nor a {enum_cls.__name__} "
                         f"name (valid: {valid})") from None


def _model_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or one of our checkpoints (`{"model": state_dict, ...}`)."""
    if "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    return obj


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in usable):
        raise ValueError(f"weights {source} hold no backbone tensor of this model; "
                         f"is it a state_dict of the same architecture?")
    skipped = sorted(set(own) - set(usable))
    if skipped:
        log.info("weights %s: %d tensors left at their initial values (e.g. %s)",
                 source, len(skipped), skipped[0])
    model.load_state_dict(usable, strict=False)


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: str) -> None:
    if "mobilenet" in arch:
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    own = model.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"model.weights_backbone {source} lacks {len(missing)} backbone tensors "
                         f"of {arch} (e.g. {missing[0]}); is it a classification state_dict of "
                         f"the same backbone?")
    model.backbone.load_state_dict({k: state[k] for k in own})
