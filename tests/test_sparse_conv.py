"""Tap-sparse dilated convolutions equal the dense ones, forward and backward, and patch nothing for good."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from vqi.models.sparse_conv import conv2d_input_grad, conv2d_tap_sparse, density, tap_sparse

GEOMETRIES = [
    ((32, 32), 3, (36, 36), (36, 36)),   # every off-centre tap reads only padding
    ((32, 32), 3, (24, 24), (24, 24)),   # off-centre taps read a strip of the image
    ((7, 9), 3, (2, 2), (2, 2)),
    ((10, 11), 3, (1, 4), (2, 3)),       # rectangular image, unequal padding and dilation
    ((6, 6), 5, (0, 0), (1, 1)),         # no padding: output smaller than the input
]


@pytest.mark.parametrize("size, kernel, padding, dilation", GEOMETRIES)
def test_output_and_input_gradient_equal_the_dense_convolution(size, kernel, padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 6, *size, requires_grad=True)
    weight, bias = torch.randn(4, 6, kernel, kernel), torch.randn(4)
    y = F.conv2d(x, weight, bias, 1, padding, dilation)
    grad_out = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad_out)
    torch.testing.assert_close(conv2d_tap_sparse(x.detach(), weight, bias, padding, dilation), y.detach(),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv2d_input_grad(grad_out, weight, size, padding, dilation), expected,
                               rtol=1e-5, atol=1e-5)


def test_density_counts_the_taps_that_read_the_image():
    assert density((3, 3), (32, 32), (36, 36), (36, 36)) == pytest.approx(1 / 9)
    assert density((3, 3), (32, 32), (24, 24), (24, 24)) == pytest.approx((32 + 2 * 8) ** 2 / (9 * 32 ** 2))
    assert density((1, 1), (5, 5), (0, 0), (1, 1)) == 1.0


@pytest.mark.parametrize("max_forward", [1.0, 0.0])   # sparse forward, or dense forward + sparse backward
def test_aspp_gradient_and_output_unchanged_and_modules_restored(max_forward):
    torch.manual_seed(0)
    aspp = ASPP(16, [12, 24, 36], out_channels=8).eval()
    for p in aspp.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 16, 20, 20, requires_grad=True)
    out = aspp(x)
    (expected,) = torch.autograd.grad(out.square().sum(), x)
    with tap_sparse(aspp, max_forward=max_forward, max_backward=1.0) as changed:
        patched_out = aspp(x)
        (grad,) = torch.autograd.grad(patched_out.square().sum(), x)
    assert changed == 3                                    # the three dilated 3x3 branches
    torch.testing.assert_close(patched_out, out)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)
    assert all("forward" not in vars(m) for m in aspp.modules())


def test_training_gets_the_same_weight_and_input_gradients():
    torch.manual_seed(0)
    aspp = ASPP(16, [12, 24, 36], out_channels=8).train()
    x = torch.randn(4, 16, 6, 6, requires_grad=True)     # the demo's 96-px crops: one tap each
    params = [x, *aspp.parameters()]
    torch.manual_seed(1)                                  # the same dropout mask in both passes
    expected = torch.autograd.grad(aspp(x).square().sum(), params)
    torch.manual_seed(1)
    with tap_sparse(aspp) as changed:
        grads = torch.autograd.grad(aspp(x).square().sum(), params)
    assert changed == 3
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())


def test_modules_restored_after_an_error():
    aspp = ASPP(4, [2], out_channels=4)
    with pytest.raises(RuntimeError), tap_sparse(aspp):
        aspp(torch.randn(1, 5, 3, 3))          # wrong channel count: the error passes, modules restored
    assert all("forward" not in vars(m) for m in aspp.modules())


@pytest.mark.slow
def test_torch_compile_runs_through_the_sparse_taps():
    """train.compile with train.tap_sparse: the compiled ASPP gives the dense output and gradients."""
    torch.manual_seed(0)
    aspp = ASPP(16, [12, 24, 36], out_channels=8).eval()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    params = [x, *aspp.parameters()]
    expected = torch.autograd.grad(aspp(x).square().sum(), params)
    with tap_sparse(aspp) as changed:
        grads = torch.autograd.grad(torch.compile(aspp)(x).square().sum(), params)
    assert changed == 3
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * want.abs().max().item())


def test_explaining_skips_taps_only_where_train_tap_sparse_switches_it_on():
    """Issue 22: explain, ScoreCAM, Random-CAM, LOTS and deletion applied tap_sparse always; now only
    inside `enabled(True)` (vqi.run: train.tap_sparse), and their maps and curves are then the same
    up to float rounding (DeepLabv3-MobileNetV3: its ASPP's dilated convolutions are eligible)."""
    from vqi.metrics.deletion import curves
    from vqi.models.factory import build_model
    from vqi.models.sparse_conv import enabled, tap_sparse_if_enabled
    from vqi.xai.gradcam import GradCAM
    from vqi.xai.scorecam import ScoreCAM
    from vqi.xai.targets import Unit

    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=3).eval()
    lraspp = build_model("lraspp_mobilenet_v3_large", num_classes=3).eval()
    with tap_sparse_if_enabled(model) as off, enabled(True), tap_sparse_if_enabled(model) as on, \
            tap_sparse_if_enabled(lraspp) as demo:
        assert (off, on, demo) == (0, 3, 0)   # the demo's LR-ASPP: nothing to skip (depthwise dilations)
    image = torch.rand(1, 3, 64, 64)
    units = [Unit(0, c, torch.ones(64, 64, dtype=torch.bool)) for c in (1, 2)]

    def outputs():
        maps = GradCAM(model, "backbone.16")(image, units)
        score = ScoreCAM(model, "backbone.16", 32)(image, units[:1])
        deletion, insertion = curves(model, image[0], maps, [1, 2], torch.stack([u.mask for u in units]), steps=4)
        return maps, score, deletion, insertion

    dense = outputs()
    with enabled(True):
        sparse = outputs()
    for a, b in zip(dense, sparse):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
