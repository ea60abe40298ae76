"""Checks of an exported model against PyTorch: output parity, CPU latency, IoU on a split."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from vqi.engine.confusion import ConfusionMatrix

Predict = Callable[[np.ndarray], np.ndarray]
"""A runtime as a function: float32 image batch (N, 3, H, W) -> logits (N, C, H, W)."""


def onnx_runner(path: str, threads: int | None = None) -> Predict:
    """An onnxruntime CPU session as a `Predict` function."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def executorch_runner(path: str) -> Predict:
    """An ExecuTorch program (`.pte`) in ExecuTorch's own runtime, the one an app links, as a
    `Predict` function; one image at a time, as the program is fixed at batch 1."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")

    def predict(x: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return np.concatenate([method.execute([image[None]])[0].numpy() for image in images])

    return predict


def torch_runner(module: torch.nn.Module) -> Predict:
    """A module returning logits (or a torchvision dict with `out`) as a `Predict` function."""

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return (out["out"] if isinstance(out, dict) else out).numpy()

    return predict


@dataclass(frozen=True)
class Parity:
    """How closely a runtime reproduces PyTorch: the largest absolute logit difference, and the
    fraction of pixels whose predicted class (argmax) is the same."""

    max_abs_diff: float
    argmax_agreement: float


def parity(reference: Predict, candidate: Predict, batches: Iterable[np.ndarray]) -> Parity:
    """`Parity` of `candidate` against `reference` over every batch, each runtime run once per batch."""
    worst, same, pixels = 0.0, 0, 0
    for x in batches:
        expected, got = reference(x), candidate(x)
        worst = max(worst, float(np.abs(expected - got).max()))
        same += int((expected.argmax(axis=1) == got.argmax(axis=1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return Parity(worst, same / pixels)


def latency_ms(predict: Predict, example: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median wall-clock milliseconds of one call on `example`, after `warmup` calls."""
    for _ in range(warmup):
        predict(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(example)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def split_metrics(predict: Predict, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                  num_classes: int, class_names: list[str]) -> dict[str, float]:
    """IoU per class and Overall (docs/metrics.md) of one runtime over (images, masks)."""
    confusion = ConfusionMatrix(num_classes)
    for images, masks in batches:
        pred = predict(images).argmax(axis=1)
        confusion.update(torch.from_numpy(masks), torch.from_numpy(pred))
    return confusion.metrics(class_names)
