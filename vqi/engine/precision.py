"""Inference precision on CUDA: one setting (autocast dtype, memory format) for every model pass.

Mixed precision (float16 or bfloat16 autocast) and channels_last apply on CUDA only. On any
other device every path runs float32 in the default memory format whatever the setting says, so
CPU results never depend on it. `tests/test_parity.py` bounds a mixed path's parity with float32.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(name: str) -> torch.dtype:
    if name not in AMP_DTYPES:
        raise ValueError(f"amp_dtype: expected one of {', '.join(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def autocast(device: torch.device, amp: bool, dtype: str = "float16") -> AbstractContextManager:
    """`dtype` (float16 or bfloat16) autocast on CUDA when `amp`; a no-op context elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=amp_dtype(dtype))
    return nullcontext()


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Images on `device`, in channels_last there when asked and on CUDA."""
    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


@dataclass(frozen=True)
class Precision:
    """How a stage's inference passes run on CUDA: `amp` with `amp_dtype`, `channels_last`."""

    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = False

    def __post_init__(self) -> None:
        amp_dtype(self.amp_dtype)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> "Precision":
        """From a config section holding `amp`, `amp_dtype` and `channels_last`."""
        return cls(bool(settings["amp"]), str(settings["amp_dtype"]), bool(settings["channels_last"]))

    def describe(self, device: torch.device) -> str:
        """What actually runs on `device`: `float32` or e.g. `float16 autocast, channels_last`."""
        if device.type != "cuda":
            return "float32"
        parts = [f"{self.amp_dtype} autocast" if self.amp else "float32"]
        return ", ".join(parts + (["channels_last"] if self.channels_last else []))

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model in channels_last on CUDA when asked (in place, as `Module.to`)."""
        if self.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def inputs(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        return to_device(images, device, self.channels_last)

    def context(self, device: torch.device) -> AbstractContextManager:
        return autocast(device, self.amp, self.amp_dtype)
