"""Dilated convolutions that skip the kernel taps reading only zero padding.

DeepLab's ASPP convolves the backbone's features with 3x3 kernels at dilations 12, 24 and 36. On
a 32x32 feature map (a 256x256 image) every off-centre tap of the dilation-36 branch reads only
padding, and on the demo's 12x12 training maps (96-px crops at output stride 8) so does every
off-centre tap of all three branches; oneDNN still computes all nine. `tap_sparse(model)` makes the model's dilated stride-1
convolutions sum, per tap, one matrix product over the output positions whose input lies inside
the image. The sums are the same, in another order. Dense oneDNN is faster where the taps cover
much of the dense work, so each direction goes sparse only below its own density (measured on a
2-core CPU: the forward breaks even near 0.55, oneDNN's input gradient near 0.8).

Explaining (parameters frozen) repeats these convolutions: ScoreCAM runs hundreds of masked
forward passes, and the gradient methods' cost beyond the forward pass is their input gradient,
once per explained class, which `conv2d_input_grad` computes from the same taps. Training
(parameters that require grad) differentiates the tap products themselves with autograd, so the
weight gradient skips the padding too.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MAX_FORWARD_DENSITY = 0.5
MAX_BACKWARD_DENSITY = 0.8
"""Skip taps only where the valid taps cover at most this share of the dense convolution's work."""


def _valid_span(offset: int, out_size: int, in_size: int) -> tuple[int, int]:
    """Output positions i (0 <= i < out_size) whose input i + offset lies in [0, in_size)."""
    return max(0, -offset), min(out_size, in_size - offset)


def _taps(kernel: tuple[int, int], input_size: tuple[int, int], output_size: tuple[int, int],
          padding: tuple[int, int], dilation: tuple[int, int]) -> list[tuple[int, int, slice, slice, slice, slice]]:
    """Per tap (a, b) that reads the image: (a, b, output rows, output cols, input rows, input cols)."""
    taps = []
    for a in range(kernel[0]):
        oy = a * dilation[0] - padding[0]
        i0, i1 = _valid_span(oy, output_size[0], input_size[0])
        for b in range(kernel[1]):
            ox = b * dilation[1] - padding[1]
            j0, j1 = _valid_span(ox, output_size[1], input_size[1])
            if i0 < i1 and j0 < j1:
                taps.append((a, b, slice(i0, i1), slice(j0, j1), slice(i0 + oy, i1 + oy), slice(j0 + ox, j1 + ox)))
    return taps


def density(kernel: tuple[int, int], input_size: tuple[int, int], padding: tuple[int, int],
            dilation: tuple[int, int]) -> float:
    """Share of a dense stride-1 convolution's multiply-adds that read the image (not padding)."""
    out = _output_size(kernel, input_size, padding, dilation)
    taps = _taps(kernel, input_size, out, padding, dilation)
    work = sum((t[2].stop - t[2].start) * (t[3].stop - t[3].start) for t in taps)
    return work / max(1, kernel[0] * kernel[1] * out[0] * out[1])


def _output_size(kernel, input_size, padding, dilation) -> tuple[int, int]:
    return tuple(input_size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) for i in range(2))


def conv2d_tap_sparse(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, 1, padding, dilation)` (ungrouped, zero padding) from the taps
    that read the image: y[out window] += W[:, :, a, b] x[in window] per tap."""
    kernel, size = tuple(weight.shape[2:]), tuple(x.shape[2:])
    out_size = _output_size(kernel, size, padding, dilation)
    xl = x.movedim(1, -1)                                        # N x H x W x C
    used = _taps(kernel, size, out_size, padding, dilation)
    if len(used) == 1 and (used[0][2].stop - used[0][2].start, used[0][3].stop - used[0][3].start) == out_size:
        # One tap covers the whole output (a small map): a single matrix product, no accumulator.
        a, b, _, _, in_rows, in_cols = used[0]
        window = xl[:, in_rows, in_cols].reshape(-1, xl.shape[-1])
        flat = window @ weight[:, :, a, b].T if bias is None else torch.addmm(bias, window, weight[:, :, a, b].T)
        return flat.view(x.shape[0], *out_size, -1).movedim(-1, 1)
    y = x.new_zeros((x.shape[0], *out_size, weight.shape[0]))
    for a, b, out_rows, out_cols, in_rows, in_cols in used:
        window = xl[:, in_rows, in_cols]     # only the taps used are read: no copy of the whole kernel
        y[:, out_rows, out_cols] += (window.reshape(-1, xl.shape[-1]) @ weight[:, :, a, b].T).view(*window.shape[:-1], -1)
    if bias is not None:
        y += bias
    return y.movedim(-1, 1)


def conv2d_input_grad(grad_out: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int],
                      padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """d(loss)/d(input) of that convolution from the same taps: x-grad[in window] += W^T g[out window]."""
    g = grad_out.movedim(1, -1)                                  # N x Ho x Wo x O
    grad_in = grad_out.new_zeros((g.shape[0], *input_size, weight.shape[1]))
    for a, b, out_rows, out_cols, in_rows, in_cols in _taps(tuple(weight.shape[2:]), input_size,
                                                             tuple(g.shape[1:3]), padding, dilation):
        window = g[:, out_rows, out_cols]
        grad_in[:, in_rows, in_cols] += (window.reshape(-1, g.shape[-1]) @ weight[:, :, a, b]).view(*window.shape[:-1], -1)
    return grad_in.movedim(-1, 1)


class _TapSparseConv2d(torch.autograd.Function):
    """A frozen conv2d whose backward is `conv2d_input_grad`; its forward is `conv2d_tap_sparse`
    or, with `sparse_forward=False`, the dense oneDNN one."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int],
                dilation: tuple[int, int], sparse_forward: bool) -> torch.Tensor:
        if sparse_forward:
            return conv2d_tap_sparse(x, weight, bias, padding, dilation)
        return F.conv2d(x, weight, bias, 1, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, padding, dilation, _ = inputs
        ctx.save_for_backward(weight)
        ctx.input_size = tuple(x.shape[-2:])
        ctx.padding, ctx.dilation = padding, dilation

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_x = conv2d_input_grad(grad_out, weight, ctx.input_size, ctx.padding, ctx.dilation)
        return grad_x, None, None, None, None, None


def _eligible(conv: nn.Conv2d) -> bool:
    return (conv.stride == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and max(conv.dilation) > 1)


def _forward(conv: nn.Conv2d, x: torch.Tensor, max_forward: float, max_backward: float) -> torch.Tensor:
    share = density(conv.kernel_size, tuple(x.shape[-2:]), conv.padding, conv.dilation)
    if conv.weight.requires_grad and torch.is_grad_enabled():   # training: autograd through the taps
        if share <= max_forward:
            return conv2d_tap_sparse(x, conv.weight, conv.bias, conv.padding, conv.dilation)
        return F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation)
    sparse_backward = x.requires_grad and torch.is_grad_enabled() and share <= max_backward
    if share <= max_forward or sparse_backward:
        return _TapSparseConv2d.apply(x, conv.weight, conv.bias, conv.padding, conv.dilation, share <= max_forward)
    return F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation)


@contextmanager
def tap_sparse(model: nn.Module, max_forward: float = MAX_FORWARD_DENSITY,
               max_backward: float = MAX_BACKWARD_DENSITY) -> Iterator[int]:
    """Inside the block, the model's dilated stride-1 Conv2d layers skip padding-only taps
    (forward and gradients, each below its density); yields how many layers changed."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and _eligible(m)]
    for conv in convs:
        conv.forward = lambda x, c=conv: _forward(c, x, max_forward, max_backward)
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward


_ENABLED: ContextVar[bool] = ContextVar("vqi_tap_sparse", default=False)


@contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Inside the block, `tap_sparse_if_enabled` applies `tap_sparse` (`train.tap_sparse=true`:
    vqi.run wraps every stage in it), else it changes nothing."""
    token = _ENABLED.set(bool(on))
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextmanager
def tap_sparse_if_enabled(model: nn.Module) -> Iterator[int]:
    """`tap_sparse(model)` where `enabled(True)` holds, else a no-op (yields 0). Explaining and
    deletion call this, not `tap_sparse`: off by default, since the demo's LR-ASPP has no eligible
    layer (its dilated convolutions are depthwise) and nothing was measured on CUDA, while on the
    CPU a DeepLabv3's ASPP gains ~1.9x (scripts/bench_sparse_conv.py) with maps equal to ~1e-6,
    not bit for bit."""
    if not _ENABLED.get():
        yield 0
        return
    with tap_sparse(model) as changed:
        yield changed
