"""Writing a segmentation model as TorchScript, ONNX and ExecuTorch, and an int8 dynamically
quantized ONNX.

torchvision's DeepLabv3 returns a dict (`out`, maybe `aux`); deployment runtimes want one tensor,
so the exported graph is `SegmentationLogits(model)`: image batch in, `out` logits out, with the
batch size, height and width left dynamic (ExecuTorch: fixed, see `export_executorch`). Every file
is written atomically.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from vqi.utils.atomic import atomic_path

INPUT_NAME, OUTPUT_NAME = "image", "logits"


class SegmentationLogits(nn.Module):
    """Wraps a torchvision segmentation model so that `forward(x)` returns only `out` (N, C, H, W)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Trace `SegmentationLogits(model)` on `example` (N, 3, H, W) and save it."""
    wrapped = SegmentationLogits(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the format is still what mobile runtimes load
        traced = torch.jit.trace(wrapped, example, check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return Path(path)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export `SegmentationLogits(model)` to ONNX with dynamic batch, height and width."""
    wrapped = SegmentationLogits(model).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
    return Path(path)


def export_executorch(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """Lower `SegmentationLogits(model)` to an ExecuTorch program (`.pte`, PyTorch Mobile's
    successor) with the XNNPACK delegate for CPUs, at `example`'s shape (1, 3, H, W).

    ExecuTorch plans its memory ahead of time, so the program runs at the shape it was exported
    at: dynamic sizes need upper bounds, and a bounded batch, height and width (in steps of 16)
    took about twice as long to lower, while an app resizes its frames to the model's size anyway.
    Needs the `mobile` extra (`pip install -e '.[mobile]'`).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    wrapped = SegmentationLogits(model).eval()
    with torch.no_grad():
        exported = torch.export.export(wrapped, (example,))
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    with atomic_path(path) as tmp:
        tmp.write_bytes(program.buffer)
    return Path(path)


def quantize_onnx(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Dynamic int8 quantization of an ONNX model (weights int8, activations quantized at run time).

    onnxruntime's `quantize_dynamic`, not `torch.ao.quantization.quantize_dynamic`: PyTorch's
    dynamic quantization covers Linear/RNN layers only, and DeepLabv3 is all convolutions, so it
    would leave the model unchanged; onnxruntime's covers Conv (ConvInteger) and runs on CPU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # onnxruntime logs one INFO line per tensor on the root logger
    try:
        with atomic_path(path) as tmp:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
    return Path(path)
