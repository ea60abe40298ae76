"""IMPACTX (docs/metrics.md, "IMPACTX"): the explanation branch on real torchvision models (random
weights), its loss, and `xai=impactx` on a known answer."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqi.engine.train_loop import batch_loss, set_bn_momentum, train_one_epoch
from vqi.models import build_model, load_model, save_checkpoint
from vqi.models.impactx import ImpactX, last_features
from vqi.models.losses import DiceLoss, reconstruction_loss
from vqi.stages.explain import build_cam
from vqi.xai.base import resolve_layer
from vqi.xai.targets import Unit, model_logits

LRASPP = "lraspp_mobilenet_v3_large"
NAMES = ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"]


def calibrated(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """`model` in eval mode with BatchNorm statistics of `images` (one pass at momentum 1): a
    random-weight MobileNetV3's eval-mode features are ~1e-9 with the initial statistics."""
    set_bn_momentum(model, 1.0)
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.mark.parametrize("arch", [LRASPP, "deeplabv3_mobilenet_v3_large"])
def test_the_branch_draws_a_map_per_foreground_class_and_its_encoding_joins_the_logits(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5, explanation_channels=8).eval()
    plain = model.segmenter                                      # the torchvision model it wraps
    assert type(plain).__name__ in ("DeepLabV3", "LRASPP")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out["out"].shape == (2, 5, 32, 32) and out["explanation"].shape == (2, 4, 32, 32)
        assert 0 < float(out["explanation"].min()) and float(out["explanation"].max()) < 1
        torch.testing.assert_close(out["out"], plain(x)["out"])      # C starts as [identity, 0]
        torch.testing.assert_close(model_logits(model, x), out["out"])
        assert resolve_layer(model, "backbone.15") is plain.backbone.get_submodule("15")

        model.join_encoding.weight.normal_()
        z = model.encoder(last_features(plain.backbone(x)))
        joined = F.interpolate(F.conv2d(z, model.join_encoding.weight), size=(32, 32), mode="bilinear",
                               align_corners=False)
        torch.testing.assert_close(model(x)["out"], plain(x)["out"] + joined)
        assert joined.abs().max() > 1e-3

    config = {"arch": arch, "num_classes": 5, "explanation_channels": 8}
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "class_names": NAMES, "model_config": config},
                    tmp_path / "impactx.pt")
    loaded, _ = load_model(tmp_path / "impactx.pt")
    assert isinstance(loaded, ImpactX)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["explanation"], model(x)["explanation"])


def test_the_loss_is_the_segmentation_loss_plus_lambda_times_the_mse_where_the_teacher_has_maps():
    g = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(2, 5, 8, 8, generator=g), torch.randn(2, 5, 8, 8, generator=g)
    masks = torch.randint(0, 5, (2, 8, 8), generator=g)
    masks[0, 0, :3] = 255
    predicted, teacher = torch.rand(2, 4, 8, 8, generator=g), torch.rand(2, 4, 8, 8, generator=g)
    teacher[0, 1] = math.nan                 # a class image 0 has no map of
    teacher[1, :, :2] = math.nan             # rows the crop padded
    p, t = predicted.double().numpy(), teacher.double().numpy()
    mse = np.mean([(p[i] - t[i]) ** 2 for i in np.ndindex(*t.shape) if not np.isnan(t[i])])
    seg = DiceLoss()(logits, masks).item() + 0.5 * DiceLoss()(aux, masks).item()

    total, recon = batch_loss({"out": logits, "aux": aux, "explanation": predicted}, masks, DiceLoss(),
                              aux_weight=0.5, teacher=teacher, explanation_weight=0.7)
    assert recon.item() == pytest.approx(mse, rel=1e-6)
    assert total.item() == pytest.approx(seg + 0.7 * mse, rel=1e-6)
    assert reconstruction_loss(predicted, torch.full_like(teacher, math.nan)).item() == 0.0
    with pytest.raises(ValueError, match="differ"):
        reconstruction_loss(predicted, teacher[:, :3])


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_lambda_zero_trains_the_segmentation_alone_and_leaves_the_decoder_untouched(weight):
    torch.manual_seed(0)
    model = build_model(LRASPP, num_classes=5, explanation_channels=8)
    x, masks = torch.randn(2, 3, 48, 48), torch.randint(0, 5, (2, 48, 48))
    teacher = torch.rand(2, 4, 48, 48)
    before = copy.deepcopy(model)
    out = before.train()(x)
    seg, recon = DiceLoss()(out["out"], masks).item(), reconstruction_loss(out["explanation"], teacher).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    stats = train_one_epoch(model, DiceLoss(), optimizer, [(x, masks, ["a", "b"], teacher)], torch.device("cpu"),
                            progress=False, explanation_weight=weight)
    assert stats["loss"] == pytest.approx(seg + weight * recon, rel=1e-5)
    assert stats["reconstruction"] == pytest.approx(recon, rel=1e-5)

    def moved(prefix: str) -> bool:
        old = dict(before.named_parameters())
        return any(not torch.equal(old[name], p) for name, p in model.named_parameters() if name.startswith(prefix))

    assert moved("segmenter.classifier") and moved("join_encoding")
    assert moved("decoder") == (weight > 0)


def test_xai_impactx_draws_the_map_the_branch_learnt_for_each_class(make_cfg):
    """Known answer: the branch fitted on one image whose teacher maps are a square per class (class 2
    top left, class 4 bottom right, each 14% of the image) explains each class by its own square.
    Fitted in eval mode, BatchNorm statistics fixed from the image, so the fit is the map's alone."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    model = calibrated(build_model(LRASPP, num_classes=5, explanation_channels=8), x)
    squares = {2: (slice(8, 32), slice(8, 32)), 4: (slice(32, 56), slice(32, 56))}
    teacher = torch.full((1, 4, 64, 64), math.nan)
    for c, (rows, cols) in squares.items():
        teacher[0, c - 1] = 0.0
        teacher[0, c - 1, rows, cols] = 1.0
    for p in model.segmenter.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=3e-3)
    for _ in range(60):   # seeds 0-4 put 0.92-0.94 of each map's mass in its square
        loss = reconstruction_loss(model(x)["explanation"], teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    cfg = make_cfg(f"model={LRASPP}", "xai=impactx", "xai.checkpoint=/runs/impactx/best.pt")
    cam = build_cam(cfg, model)
    anywhere = torch.ones(64, 64, dtype=torch.bool)
    maps = cam(x, [Unit(0, 2, anywhere), Unit(0, 4, anywhere)])
    assert maps.shape == (2, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) == pytest.approx(1.0)
    for m, (rows, cols) in zip(maps, squares.values()):
        inside = float(m[rows, cols].sum() / m.sum())
        assert inside > 0.8, inside                                   # 0.14 if the map ignored the square
        peak = divmod(int(m.argmax()), 64)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop

    with pytest.raises(ValueError, match="/runs/impactx/best.pt holds a LRASPP without an explanation branch"):
        build_cam(cfg, build_model(LRASPP, num_classes=5))
