"""The fast CAM engine against pytorch-grad-cam (the reference), and its cost guarantees."""
from __future__ import annotations

import functools

import pytest
import torch
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet101

from vqi.xai.base import gradient_maps, scale_cams
from vqi.xai.gradcam import GradCAM
from vqi.xai.gradcampp import GradCAMPlusPlus
from vqi.xai.hirescam import HiResCAM
from vqi.xai.layercam import LayerCAM
from vqi.xai.library import LibraryCAM
from vqi.xai.scorecam import ScoreCAM
from vqi.xai.targets import Unit, model_logits
from vqi.xai.xgradcam import XGradCAM

GRADIENT = {GradCAM: "GradCAM", GradCAMPlusPlus: "GradCAMPlusPlus", XGradCAM: "XGradCAM",
            HiResCAM: "HiResCAM", LayerCAM: "LayerCAM"}


@functools.lru_cache(maxsize=None)
def _mobilenet(seed: int = 0) -> torch.nn.Module:
    """A random-weight DeepLabv3-MobileNetV3 (cached: tests must not modify it)."""
    torch.manual_seed(seed)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5,
                                        aux_loss=False).eval()


def _units(model, images, classes_per_image: int | None = None) -> list[Unit]:
    """Every predicted class of every image (or a fixed band split when argmax gives one class)."""
    with torch.no_grad():
        pred = model_logits(model, images).argmax(1)
    units = []
    for n in range(images.shape[0]):
        found = pred[n].unique().tolist()
        if len(found) >= 2:
            units += [Unit(n, c, pred[n] == c) for c in found]
        else:  # random weights often predict one class: target two bands of the image instead
            h = images.shape[2]
            top = torch.zeros_like(pred[n], dtype=torch.bool)
            top[: h // 2] = True
            units += [Unit(n, 1, top), Unit(n, 3, ~top)]
    return units


def _close(fast: torch.Tensor, ref: torch.Tensor) -> None:
    diff = (fast - ref).abs()
    assert fast.shape == ref.shape
    assert float(diff.max()) <= 1e-2 and float(diff.mean()) <= 1e-3, (float(diff.max()), float(diff.mean()))


@pytest.mark.parametrize("method", list(GRADIENT))
def test_gradient_methods_match_library_on_mobilenet(method):
    model = _mobilenet()
    images = torch.randn(2, 3, 64, 64)
    units = _units(model, images)
    fast = method(model, "backbone.16")(images, units)
    ref = LibraryCAM(model, "backbone.16", GRADIENT[method])(images, units)
    assert float(fast.min()) >= 0 and float(fast.max()) <= 1
    _close(fast, ref)


def test_scorecam_matches_library_on_small_layer():
    model = _mobilenet(1)
    images = torch.randn(1, 3, 48, 48)
    units = _units(model, images)
    fast = ScoreCAM(model, "backbone.4", batch_size=7)(images, units)  # 40 channels
    ref = LibraryCAM(model, "backbone.4", "ScoreCAM", batch_size=16)(images, units)
    _close(fast, ref)


@pytest.mark.slow
def test_scorecam_matches_library_on_last_block():
    model = _mobilenet(2)
    images = torch.randn(1, 3, 64, 64)
    units = _units(model, images)
    _close(ScoreCAM(model, "backbone.16", batch_size=32)(images, units),
           LibraryCAM(model, "backbone.16", "ScoreCAM")(images, units))


@pytest.mark.slow
def test_gradient_methods_match_library_on_resnet101_256():
    torch.manual_seed(0)
    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()
    images = torch.randn(1, 3, 256, 256)
    units = _units(model, images)
    fast = gradient_maps([m(model, "backbone.layer4") for m in GRADIENT if m is not LayerCAM], images, units)
    for method, name in GRADIENT.items():
        if method is not LayerCAM:
            _close(fast[method.name], LibraryCAM(model, "backbone.layer4", name)(images, units))


def test_gradient_maps_share_one_pass_and_equal_single_method_maps():
    model = _mobilenet()
    images = torch.randn(2, 3, 64, 64)
    units = _units(model, images)
    calls = []
    handle = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        maps = gradient_maps([GradCAM(model, "backbone.16"), HiResCAM(model, "backbone.16")], images, units)
    finally:
        handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(maps["gradcam"], GradCAM(model, "backbone.16")(images, units))
    torch.testing.assert_close(maps["hirescam"], HiResCAM(model, "backbone.16")(images, units))


def test_no_parameter_gradients_and_no_backward_through_backbone():
    model = _mobilenet.__wrapped__()  # a fresh model: the library tests leave .grad on the cached one
    images = torch.randn(1, 3, 64, 64)
    backward_calls = []
    handle = model.backbone.get_submodule("15").register_full_backward_hook(
        lambda *a: backward_calls.append(1))
    try:
        GradCAMPlusPlus(model, "backbone.16")(images, _units(model, images))
    finally:
        handle.remove()
    assert backward_calls == []
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # frozen only while explaining


def test_hooks_removed_and_errors_raised_when_layer_runs_twice():
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()
    images = torch.randn(1, 3, 32, 32)
    relu = torch.nn.ReLU()
    # A module reused twice in one forward pass is ambiguous as a target layer.
    model.classifier = torch.nn.Sequential(model.classifier, relu, relu)
    with pytest.raises(RuntimeError, match="ran 2 times"):
        GradCAM(model, relu)(images, [Unit(0, 1, torch.ones(32, 32, dtype=torch.bool))])
    assert not relu._forward_hooks


def test_unknown_layer_and_bad_unit_are_named():
    model = _mobilenet()
    with pytest.raises(ValueError, match="backbone.layer4"):
        GradCAM(model, "backbone.layer4")
    with pytest.raises(ValueError, match="does not fit"):
        GradCAM(model, "backbone.16")(torch.randn(1, 3, 32, 32), [Unit(0, 1, torch.ones(16, 16, dtype=torch.bool))])


def test_scorecam_batches_are_bounded_and_masked_passes_carry_no_hook():
    model = _mobilenet()
    images = torch.randn(1, 3, 32, 32)
    layer = model.backbone.get_submodule("4")
    units = _units(model, images)
    batches, hooks_seen = [], []
    pre = model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    seen = layer.register_forward_hook(lambda m, i, o: hooks_seen.append(len(m._forward_hooks)))
    try:
        ScoreCAM(model, layer, batch_size=6)(images, units)
    finally:
        pre.remove()
        seen.remove()
    assert batches[0] == 1 and max(batches[1:]) <= 6 and sum(batches[1:]) == 40
    assert hooks_seen[0] == 2 and set(hooks_seen[1:]) == {1}  # ours only during the first pass


def test_scale_cams_normalises_then_resizes():
    cams = torch.tensor([[[0.0, 2.0], [4.0, -1.0]]])
    out = scale_cams(cams, (4, 4))
    assert out.shape == (1, 4, 4)
    assert float(out.min()) == 0.0 and abs(float(out.max()) - 1.0) < 1e-6
    assert torch.all(scale_cams(torch.zeros(1, 2, 2), (3, 3)) == 0)  # an empty map stays zero


@pytest.mark.parametrize("method", [HiResCAM, ScoreCAM])
def test_predict_and_explain_gives_the_plain_prediction_and_the_same_maps(method):
    """The augment stage's one-pass path: its prediction is the argmax of a plain forward (up to
    float ties), its units are chosen from it, and its maps are the method's maps of those units."""
    model = _mobilenet()
    images = torch.randn(2, 3, 64, 64)
    cam = method(model, "backbone.16")
    with torch.no_grad():
        logits = model_logits(model, images)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4            # pixels whose argmax no rounding can flip
    preds, units, maps = cam.predict_and_explain(images, lambda p: _units(model, images))
    assert preds.shape == (2, 64, 64)
    assert torch.equal(preds[clear], logits.argmax(1)[clear])
    assert len(units) == maps.shape[0] > 0
    assert torch.allclose(maps, cam(images, units), atol=1e-5)
    chosen: list[torch.Tensor] = []
    _, none, empty = cam.predict_and_explain(images, lambda p: chosen.append(p) or [])
    assert none == [] and empty.shape == (0, 64, 64) and torch.equal(chosen[0], preds)
