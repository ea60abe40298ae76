"""Pointing game and deletion / insertion on hand-made cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from vqi.metrics import deletion, pointing
from vqi.metrics.evaluator import DeletionInsertionEvaluator, ImageResult, PointingEvaluator


def _brute_pointing(cam: np.ndarray, gt: np.ndarray, radius: float) -> float:
    """Independent: Euclidean distance of the (first) peak to the nearest G_c pixel."""
    i, j = divmod(int(np.argmax(cam)), cam.shape[1])
    return 100.0 * (ndimage.distance_transform_edt(~gt)[i, j] <= radius)


def test_pointing_map_equal_to_ground_truth_scores_100_and_thin_tolerance_is_euclidean():
    gt = np.zeros((20, 20), bool)
    gt[:, 10] = True                                   # a one-pixel-wide "cable"
    assert pointing.hits(gt[None].astype(np.float32), gt[None]).tolist() == [100.0]
    cams, expected = [], []
    for (i, j) in [(5, 13), (5, 7), (5, 14), (2, 2)]:  # 3 px right: hit; 3 px left: hit; 4 px: miss; far: miss
        cam = np.zeros((20, 20), np.float32)
        cam[i, j] = 1
        cams.append(cam)
    out = pointing.hits(np.stack(cams), np.stack([gt] * 4), radius=3)
    assert out.tolist() == [100.0, 100.0, 0.0, 0.0]
    diag = np.zeros((20, 20), np.float32)
    diag[7, 12] = 1
    short = np.zeros((20, 20), bool)
    short[:6, 10] = True                               # cable ends at row 5: (7, 12) is sqrt(8) = 2.83 away
    assert pointing.hits(diag[None], short[None], radius=2.8).tolist() == [0.0]
    assert pointing.hits(diag[None], short[None], radius=2.9).tolist() == [100.0]


def test_pointing_ties_take_the_first_pixel_in_raster_order_and_match_brute_force():
    const = np.ones((1, 12, 12), np.float32)
    gt = np.zeros((1, 12, 12), bool)
    gt[0, 0, 3] = True
    assert pointing.hits(const, gt, radius=3).tolist() == [100.0]    # peak (0, 0), 3 px away
    assert pointing.hits(const, gt, radius=2).tolist() == [0.0]
    rng = np.random.default_rng(0)
    maps = rng.random((30, 24, 24)).astype(np.float32)
    gts = rng.random((30, 24, 24)) > 0.995
    gts[:, 0, 0] = True
    for r in (0, 1.5, 3, 6):
        assert pointing.hits(maps, gts, r).tolist() == [_brute_pointing(m, g, r) for m, g in zip(maps, gts)]
    ev = PointingEvaluator(["bg", "cable", "tower"], radius=3)
    gt_img = np.zeros((12, 12), np.int64)
    gt_img[0, 3], gt_img[11, 11] = 1, 2
    ev.process(ImageResult("a", [1, 2], np.ones((2, 12, 12), np.float32), np.zeros((2, 12, 12), bool), gt_img))
    assert ev.evaluate() == {"pointing": 50.0, "pointing/cable": 100.0, "pointing/tower": 0.0}


def _pointwise_model() -> nn.Module:
    """softmax_1(x)(p) = sigmoid(4 x_0(p)) exactly: class 1's logit is 4 x_0, class 0's is 0,
    classes 2..4 sit at -1e4. A real conv, weights set by hand so the answer is known."""
    conv = nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.0, 0.0, -1e4, -1e4, -1e4]))
        conv.weight[1, 0] = 4.0
    return conv.eval()


def _object_image() -> tuple[torch.Tensor, torch.Tensor]:
    """16 x 16 image, channel 0 = 2 on a 4 x 8 object (32 px = 1/8 of the image), -2 elsewhere."""
    gt = torch.zeros(16, 16, dtype=torch.bool)
    gt[6:10, 4:12] = True
    image = torch.full((3, 16, 16), -2.0)
    image[0][gt] = 2.0
    return image, gt


def _reference_curves(image, cam, gt, steps, sigma):
    """Independent: numpy order, the spec's perturbations, sigmoid(4 x_0) averaged over T_c."""
    x0 = image[0].numpy().astype(np.float64)
    soft = ndimage.gaussian_filter(x0, sigma, mode="mirror", truncate=3.0)
    order = np.argsort(-cam.numpy().ravel(), kind="stable")
    n = x0.size
    conf = lambda a: (1 / (1 + np.exp(-4 * a)))[gt.numpy()].mean()    # noqa: E731
    dele, ins = [], []
    for s in range(steps + 1):
        taken = np.zeros(n, bool)
        taken[order[: s * n // steps]] = True
        taken = taken.reshape(x0.shape)
        dele.append(conf(np.where(taken, soft, x0)))
        ins.append(conf(np.where(taken, x0, soft)))
    return np.array(dele) / conf(x0), np.array(ins) / conf(x0)


def test_blur_is_the_gaussian_of_the_spec():
    image = torch.randn(3, 24, 24)
    ref = np.stack([ndimage.gaussian_filter(c.double().numpy(), 2.0, mode="mirror", truncate=3.0) for c in image])
    np.testing.assert_allclose(deletion.blur(image, 2.0).numpy(), ref, atol=1e-5)
    assert torch.allclose(deletion.blur(image), deletion.blur(image, 24 / 20))   # default sigma = W / 20


def test_ground_truth_map_deletion_falls_at_once_and_insertion_rises_at_once():
    model, (image, gt) = _pointwise_model(), _object_image()
    cam = gt.float()
    dele, ins = deletion.curves(model, image, cam[None], [1], gt[None], steps=8, batch_size=5, sigma=2.0)
    ref_d, ref_i = _reference_curves(image, cam, gt, 8, 2.0)
    np.testing.assert_allclose(dele[0].numpy(), ref_d, atol=1e-6)
    np.testing.assert_allclose(ins[0].numpy(), ref_i, atol=1e-6)
    low = float(dele[0, 1])
    assert float(dele[0, 0]) == pytest.approx(1.0) and low < 0.5
    assert np.allclose(dele[0, 1:].numpy(), low)      # the whole object is gone after the first step
    assert np.allclose(ins[0, 1:].numpy(), 1.0)        # and back after the first insertion step
    # AUC by hand: the first trapezoid (1 + low) / 2, then S - 1 flat ones at `low`, each 1/8 wide
    assert deletion.auc(dele.numpy())[0] == pytest.approx(100 * ((1 + low) / 2 + 7 * low) / 8)
    assert deletion.auc(ins.numpy())[0] == pytest.approx(100 * ((float(ins[0, 0]) + 1) / 2 + 7) / 8)


def test_inverse_map_deletes_the_object_last_and_evaluator_batches_and_averages():
    model, (image, gt) = _pointwise_model(), _object_image()
    maps = torch.stack([gt.float(), 1 - gt.float()])
    dele, ins = deletion.curves(model, image, maps, [1, 1], torch.stack([gt, gt]), steps=8, batch_size=7, sigma=2.0)
    ref_d, _ = _reference_curves(image, maps[1], gt, 8, 2.0)
    np.testing.assert_allclose(dele[1].numpy(), ref_d, atol=1e-6)
    assert np.allclose(dele[1, :7].numpy(), 1.0, atol=1e-3) and float(dele[1, 8]) < 0.5
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    ev = DeletionInsertionEvaluator(["bg", "cable"], model, steps=8, batch_size=7, sigma=2.0)
    try:
        ev.process(ImageResult("a", [1, 1], maps.numpy(), np.zeros((2, 16, 16), bool), gt.long().numpy(),
                               image=image, targets=torch.stack([gt, gt])))
    finally:
        handle.remove()
    assert max(calls) <= 7 and sum(calls) == 2 + 2 * 2 * 9    # Y once per unit, then 2 (S + 1) per unit
    out = ev.evaluate()
    aucs = deletion.auc(dele.numpy())
    assert out["deletion"] == pytest.approx(aucs.mean()) and out["deletion/cable"] == pytest.approx(aucs.mean())
    assert out["insertion"] == pytest.approx(deletion.auc(ins.numpy()).mean())
    np.testing.assert_allclose(ev.curves()["deletion"], dele.numpy().mean(axis=0))
