"""The ensemble and the library-only methods (EigenCAM, AblationCAM) through real Hydra configs."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

from vqi.config import build_cam
from vqi.xai.ensemble import EnsembleCAM
from vqi.xai.gradcam import GradCAM
from vqi.xai.gradcampp import GradCAMPlusPlus
from vqi.xai.hirescam import HiResCAM
from vqi.xai.library import LibraryCAM
from vqi.xai.random_cam import RandomCAM
from vqi.xai.targets import Unit
from vqi.xai.xgradcam import XGradCAM

MOBILENET = ("model=deeplabv3_mobilenet_v3_large", "model.output_stride=16")


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()


def _units(size: int) -> list[Unit]:
    top = torch.zeros(size, size, dtype=torch.bool)
    top[: size // 2] = True
    return [Unit(0, 1, top), Unit(0, 3, ~top), Unit(1, 2, torch.ones(size, size, dtype=torch.bool))]


def test_ensemble_from_config_is_the_mean_of_its_members_maps_from_one_forward_pass(make_cfg):
    model, images, units = _mobilenet(), torch.randn(2, 3, 48, 48), _units(48)
    cfg = make_cfg(*MOBILENET, "xai=ensemble")
    ensemble = build_cam(cfg, model)
    assert isinstance(ensemble, EnsembleCAM) and [m.name for m in ensemble.members] == \
        ["gradcam", "gradcampp", "xgradcam", "hirescam"]
    calls = []
    handle = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = ensemble(images, units)
    finally:
        handle.remove()
    assert len(calls) == 1
    layer = cfg.xai.target_layer
    expected = sum(m(model, layer)(images, units) for m in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM)) / 4
    torch.testing.assert_close(out, expected)
    mixed = EnsembleCAM(model, layer, [GradCAM, lambda model, target_layer: RandomCAM(model, target_layer, seed=3)])
    torch.testing.assert_close(mixed(images, units), (GradCAM(model, layer)(images, units)
                                                      + RandomCAM(model, layer, seed=3)(images, units)) / 2)
    with pytest.raises(ValueError, match="engine=fast"):
        build_cam(make_cfg(*MOBILENET, "xai=ensemble", "xai.engine=library"), model)


def test_eigencam_runs_on_the_library_engine_and_the_fast_engine_says_so(make_cfg):
    model, images = _mobilenet(), torch.randn(2, 3, 32, 32)
    cfg = make_cfg(*MOBILENET, "xai=eigencam")
    cam = build_cam(cfg, model)
    assert isinstance(cam, LibraryCAM) and cfg.xai.engine == "library"
    out = cam(images, _units(32))
    assert out.shape == (3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1 + 1e-6
    with pytest.raises(ValueError, match="no fast implementation"):
        build_cam(make_cfg(*MOBILENET, "xai=eigencam", "xai.engine=fast"), model)


def test_ablationcam_runs_at_most_batch_size_ablated_copies_per_pass(make_cfg):
    model, images = _mobilenet(), torch.randn(1, 3, 32, 32)
    cfg = make_cfg(*MOBILENET, "xai=ablationcam", "model.target_layer=backbone.4", "xai.method.batch_size=7")
    cam = build_cam(cfg, model)
    sizes = []
    handle = model.backbone.get_submodule("0").register_forward_hook(lambda m, i, o: sizes.append(o.shape[0]))
    try:
        out = cam(images, _units(32)[:1])
    finally:
        handle.remove()
    assert out.shape == (1, 32, 32) and max(sizes) <= 7
    assert sum(sizes[2:]) == 40      # library passes first: then one ablated copy per channel (40 at backbone.4)
