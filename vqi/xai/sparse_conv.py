"""Input gradients of dilated convolutions that skip the taps reading only zero padding.

DeepLab's ASPP convolves layer4's features with 3x3 kernels at dilations 12, 24 and 36. On a
32x32 feature map (a 256x256 image) every off-centre tap of the dilation-36 branch reads only
padding, and most of the other branches' taps read mostly padding; cuDNN/oneDNN still compute
all nine. The CAM engine's cost beyond the forward pass is exactly these convolutions' input
gradients, one per explained class, so `tap_sparse_backward` gives the model's dilated stride-1
convolutions a backward that sums, per tap, one matrix product over the output positions whose
input lies inside the image. The forward is the module's own; the gradient is exact (the same
sums, in another order); parameters get no gradient, so use it with frozen parameters only.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _valid_span(offset: int, out_size: int, in_size: int) -> tuple[int, int]:
    """Output positions i (0 <= i < out_size) whose input i + offset lies in [0, in_size)."""
    return max(0, -offset), min(out_size, in_size - offset)


def conv2d_input_grad(grad_out: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int],
                      padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """d(loss)/d(input) of a stride-1, ungrouped, zero-padded conv2d, skipping all-padding taps.

    `grad_out` is N x O x Ho x Wo, `weight` O x C x kh x kw; returns N x C x H x W (channels-last
    memory). Each tap (a, b) reads input (i + a*dh - ph, j + b*dw - pw) for output (i, j): its
    share of the gradient is W[:, :, a, b]^T applied to grad_out over the rows and columns where
    that input exists, added into the matching window of the input's gradient.
    """
    height, width = input_size
    g = grad_out.movedim(1, -1)                                  # N x Ho x Wo x O
    taps = weight.permute(2, 3, 0, 1).contiguous()               # kh x kw x O x C
    grad_in = grad_out.new_zeros((g.shape[0], height, width, weight.shape[1]))
    for a in range(weight.shape[2]):
        oy = a * dilation[0] - padding[0]
        i0, i1 = _valid_span(oy, g.shape[1], height)
        for b in range(weight.shape[3]):
            ox = b * dilation[1] - padding[1]
            j0, j1 = _valid_span(ox, g.shape[2], width)
            if i0 >= i1 or j0 >= j1:
                continue
            window = g[:, i0:i1, j0:j1]
            part = window.reshape(-1, g.shape[-1]) @ taps[a, b]
            grad_in[:, i0 + oy:i1 + oy, j0 + ox:j1 + ox] += part.view(*window.shape[:-1], -1)
    return grad_in.movedim(-1, 1)


class _TapSparseConv2d(torch.autograd.Function):
    """conv2d whose backward is `conv2d_input_grad` (input only: parameters are frozen)."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
        return F.conv2d(x, weight, bias, 1, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, padding, dilation = inputs
        ctx.save_for_backward(weight)
        ctx.input_size = tuple(x.shape[-2:])
        ctx.padding, ctx.dilation = padding, dilation

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_x = conv2d_input_grad(grad_out, weight, ctx.input_size, ctx.padding, ctx.dilation)
        return grad_x, None, None, None, None


def _eligible(conv: nn.Conv2d) -> bool:
    return (conv.stride == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and max(conv.dilation) > 1)


@contextmanager
def tap_sparse_backward(model: nn.Module) -> Iterator[int]:
    """Inside the block, the model's dilated stride-1 Conv2d layers back-propagate to their input
    with `conv2d_input_grad`; yields how many layers changed. Their forward is unchanged."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and _eligible(m)]
    for conv in convs:
        conv.forward = (lambda x, c=conv: _TapSparseConv2d.apply(x, c.weight, c.bias, c.padding, c.dilation))
    try:
        yield len(convs)
    finally:
        for conv in convs:
            del conv.forward
