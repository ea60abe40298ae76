"""IMPACTX (docs/metrics.md, "IMPACTX"): the explanation branch on real torchvision models (random
weights) and its loss."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqi.engine.train_loop import batch_loss, train_one_epoch
from vqi.models import build_model, load_model, save_checkpoint
from vqi.models.impactx import ImpactX, last_features
from vqi.models.losses import DiceLoss, reconstruction_loss
from vqi.xai.base import resolve_layer
from vqi.xai.targets import model_logits

LRASPP = "lraspp_mobilenet_v3_large"
NAMES = ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"]


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
