"""One training epoch and one evaluation pass, with every setting an explicit argument.

Batches are `(image, mask, stem)` as `vqi.data.dataset.SegmentationDataset` yields them; IMPACTX
training (`explanation_weight` set) takes `(image, mask, stem, teacher maps)` batches of
`vqi.xai.teacher_maps.TeacherMapsDataset` and a model with an explanation branch.
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
from vqi.models.losses import reconstruction_loss


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


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_loss(out: dict[str, torch.Tensor], masks: torch.Tensor, criterion: Criterion, aux_weight: float = 0.5,
               teacher: torch.Tensor | None = None, explanation_weight: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training loss of one batch, its map reconstruction term or None).

    The loss is the criterion on `out["out"]`, plus `aux_weight` times the aux head's when the
    model has one, plus, given `teacher` maps (IMPACTX), `explanation_weight` (lambda) times
    `reconstruction_loss(out["explanation"], teacher)`; lambda = 0 leaves the term out of the
    graph, so the decoder gets no gradient at all (not even weight decay moves it).
    """
    loss = criterion(out["out"], masks)
    if "aux" in out and aux_weight:
        loss = loss + aux_weight * criterion(out["aux"], masks)
    if teacher is None:
        return loss, None
    recon = reconstruction_loss(out["explanation"], teacher)
    return (loss + explanation_weight * recon if explanation_weight else loss), recon


def train_one_epoch(model: nn.Module, criterion: Criterion,
                    optimizer: torch.optim.Optimizer, loader: Iterable, device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, amp: bool = False,
                    channels_last: bool = False, accumulate: int = 1, aux_weight: float = 0.5,
                    epoch: int = 0, progress: bool = True, tap_sparse: bool = False,
                    explanation_weight: float | None = None) -> dict[str, float]:
    """Train over `loader` once, stepping the optimizer every `accumulate` batches.

    Returns the mean loss over batches (`loss`, `batch_loss`'s) and the number of optimizer steps
    taken; with `explanation_weight` (IMPACTX: batches carry teacher maps) also the mean
    reconstruction term (`reconstruction`, unweighted).
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
    recon_total = torch.zeros((), dtype=torch.float64, device=device)
    batches, steps = 0, 0
    with sparse_taps(model) if tap_sparse else nullcontext():
        for i, batch in enumerate(bar):
            images, masks = to_device(batch[0], device, channels_last), batch[1].to(device, non_blocking=True)
            teacher = batch[3].to(device, non_blocking=True) if explanation_weight is not None else None
            with autocast(device, amp):
                out = model(images)
            loss, recon = batch_loss(out, masks, criterion, aux_weight, teacher, explanation_weight or 0.0)
            if recon is not None:
                recon_total += recon.detach()
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
    stats = {"loss": mean, "steps": float(steps)}
    if explanation_weight is not None:
        stats["reconstruction"] = float(recon_total) / max(batches, 1)
    return stats


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
