"""Random-CAM, the floor of Table I: known answers on hand-made and real models, seeded reruns."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

from vqi.config import build_cam
from vqi.xai.random_cam import RandomCAM, random_weights, unit_seed
from vqi.xai.targets import Unit


def _library_scale(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's post-processing of one raw map: ReLU, scale + resize, ReLU, scale."""
    once = scale_cam_image(np.maximum(raw, 0)[None], size)
    return scale_cam_image(np.maximum(once, 0))[0]


def _mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()


def _one_channel_model() -> nn.Module:
    """conv(3->1) is the target layer: its single channel A is the map before the weight."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 1, 3, stride=2, padding=1), nn.Conv2d(1, 5, 1)).eval()


def test_one_channel_map_is_the_positive_or_negative_part_of_the_activation_by_the_weight_sign():
    model = _one_channel_model()
    image = torch.randn(1, 3, 16, 16)
    act = model[0](image)[0, 0].detach().numpy()
    expected = _library_scale(act, (16, 16))
    seen = set()
    for seed in range(8):
        w = float(random_weights(unit_seed(seed, 1, image[0]), 1)[0])
        cam = RandomCAM(model, model[0], seed=seed)(image, [Unit(0, 1, torch.ones(16, 16, dtype=torch.bool))])[0]
        if w > 0:   # ReLU(w A) normalised = A's positive part normalised, whatever w
            np.testing.assert_allclose(cam.numpy(), expected, atol=1e-5)
        else:       # ReLU(w A) keeps only A's negative part
            np.testing.assert_allclose(cam.numpy(), _library_scale(w * act, (16, 16)),
                                       atol=1e-5)
        seen.add(w > 0)
    assert seen == {True, False}, "the 8 seeds should draw weights of both signs"


def test_maps_equal_the_formula_on_a_real_model_and_ignore_the_target_mask():
    model = _mobilenet()
    images = torch.randn(2, 3, 48, 48)
    layer = model.backbone.get_submodule("16")
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    units = [Unit(0, 1, torch.ones(48, 48, dtype=torch.bool)), Unit(1, 1, torch.zeros(48, 48, dtype=torch.bool)),
             Unit(1, 3, torch.ones(48, 48, dtype=torch.bool))]
    cams = RandomCAM(model, "backbone.16", seed=7)(images, units)
    for cam, u in zip(cams, units):
        rng = torch.Generator().manual_seed(unit_seed(7, u.class_id, images[u.index]))
        w = (torch.rand(acts[0].shape[1], generator=rng, dtype=torch.float64) * 2 - 1).numpy()
        raw = np.einsum("k,khw->hw", w, acts[0][u.index].double().numpy())
        np.testing.assert_allclose(cam.numpy(), _library_scale(raw, (48, 48)), atol=1e-4)
    assert not torch.allclose(cams[1], cams[2])      # another class, other weights


def test_reruns_batches_and_positions_give_the_same_map_and_the_seed_changes_it():
    model = _mobilenet()
    images = torch.randn(3, 3, 32, 32)
    mask = torch.ones(32, 32, dtype=torch.bool)
    cam = RandomCAM(model, "backbone.16", seed=1)
    together = cam(images, [Unit(n, 2, mask) for n in range(3)])
    alone = cam(images[2:], [Unit(0, 2, mask)])
    torch.testing.assert_close(together[2], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together, cam(images, [Unit(n, 2, mask) for n in range(3)]))
    other = RandomCAM(model, "backbone.16", seed=2)(images, [Unit(n, 2, mask) for n in range(3)])
    assert not torch.allclose(together, other)


def test_hydra_config_builds_it_like_any_method_and_table1_lists_it(make_cfg):
    cfg = make_cfg("model=deeplabv3_mobilenet_v3_large", "xai=random_cam", "seed=5")
    assert "random_cam" in cfg.xai_methods
    method = build_cam(cfg, _mobilenet())
    assert isinstance(method, RandomCAM) and method.seed == 5 and cfg.xai.name == "random_cam"
    out = method(torch.randn(1, 3, 32, 32), [Unit(0, 4, torch.ones(32, 32, dtype=torch.bool))])
    assert out.shape == (1, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_explain_stage_writes_identical_maps_on_a_rerun(make_cfg, tmp_path):
    import mlflow
    from xai_factory import xai_setup

    from vqi import tracking
    from vqi.stages import explain
    from vqi.xai.maps import load_maps

    cfg = make_cfg(*xai_setup(tmp_path), "xai=random_cam", "xai.figures=0", stage="explain")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    runs = []
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment_id):
            explain.run(cfg)
        method_dir = Path(cfg.xai.maps_dir) / "random_cam"
        runs.append({p.stem: load_maps(p) for p in sorted(method_dir.glob("*.npz"))})
    assert runs[0] and any(runs[0].values())
    for stem, maps in runs[0].items():
        assert maps.keys() == runs[1][stem].keys()
        assert all(np.array_equal(maps[k], runs[1][stem][k]) for k in maps)
