"""One training epoch and one evaluation pass, with every setting an explicit argument.

Batches are `(image, mask, stem)` as `vqi.data.dataset.SegmentationDataset` yields them.
AMP (float16 autocast + GradScaler) and channels_last apply on CUDA only; on other devices
the same code runs in float32. `tap_sparse=True` runs the dilated convolutions through
`vqi.models.sparse_conv` (exact; on small CPU feature maps ASPP then skips the taps that read only
padding, in the forward pass and in every gradient).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable

import torch
from torch import nn
from vqi.utils.progress import progress as progress_bar

from vqi.engine.confusion import ConfusionMatrix
from vqi.engine.distributed import all_reduce_sum
from vqi.engine.precision import Precision, autocast, to_device
from vqi.models.sparse_conv import tap_sparse as sparse_taps
from vqi.engine.prediction import predicted_classes


POSTFIX_EVERY = 10
"""Batches between two updates of the progress line's running loss (each one a host sync)."""


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set every BatchNorm's running-statistics momentum; returns how many layers changed.

    MobileNetV3 ships with 0.01: trained from scratch for a few hundred steps, its running
    statistics lag far behind the weights and evaluation (which uses them) sees all background.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def train_one_epoch(model: nn.Module, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    optimizer: torch.optim.Optimizer, loader: Iterable, device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, amp: bool = False,
                    channels_last: bool = False, accumulate: int = 1, aux_weight: float = 0.5,
                    epoch: int = 0, progress: bool = True, tap_sparse: bool = False) -> dict[str, float]:
    """Train over `loader` once, stepping the optimizer every `accumulate` batches.

    Returns the mean loss over batches (`loss`, the main head's criterion plus `aux_weight` times
    the aux head's when the model has one) and the number of optimizer steps taken.
    """
    if accumulate < 1:
        raise ValueError(f"train.accumulate must be >= 1, got {accumulate}")
    scaler = scaler or make_scaler(device, amp)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    bar = progress_bar(loader, desc=f"train epoch {epoch + 1}", disable=not progress, leave=False)
    # The loss is summed on the device: no host sync per batch (one per POSTFIX_EVERY batches
    # for the progress line, and one at the end, where a non-finite loss is refused before the
    # stage saves anything).
    total = torch.zeros((), dtype=torch.float64, device=device)
    batches, steps = 0, 0
    with sparse_taps(model) if tap_sparse else nullcontext():
        for i, (images, masks, _) in enumerate(bar):
            images, masks = to_device(images, device, channels_last), masks.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(images)
            loss = criterion(out["out"], masks)
            if "aux" in out and aux_weight:
                loss = loss + aux_weight * criterion(out["aux"], masks)
            scaler.scale(loss / accumulate).backward()
            if (i + 1) % accumulate == 0 or (n_batches is not None and i + 1 == n_batches):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
            total += loss.detach()
            batches += 1
            if progress and batches % POSTFIX_EVERY == 0:
                bar.set_postfix(loss=f"{float(total) / batches:.4f}")
    mean = float(total) / max(batches, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"the training loss became {mean} in epoch {epoch + 1}; "
                                 "lower train.lr or check the data")
    return {"loss": mean, "steps": float(steps)}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device,
            precision: Precision = Precision()) -> torch.Tensor:
    """Class index per pixel `(N, H, W)` (argmax of the `out` logits), on `device`."""
    with precision.context(device):
        logits = model(precision.inputs(images, device))["out"]
    return predicted_classes(logits)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, *,
             precision: Precision = Precision(), progress: bool = True,
             on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[str]], None] | None = None,
             tap_sparse: bool = False) -> ConfusionMatrix:
    """One confusion matrix over every pixel of `loader`, summed over ranks when distributed.

    `on_batch(images, masks, preds, stems)` sees every batch (e.g. to draw overlays).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes)
    with sparse_taps(model) if tap_sparse else nullcontext():
        for images, masks, stems in progress_bar(loader, desc="evaluate", disable=not progress, leave=False):
            preds = predict(model, images, device, precision).cpu()
            cm.update(masks, preds)
            if on_batch is not None:
                on_batch(images, masks, preds, list(stems))
    all_reduce_sum(cm.mat)
    return cm
