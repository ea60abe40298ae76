"""Faithfulness metrics: hand-made confidences and a real random-weight segmentation model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

from vqi.metrics.evaluator import (Evaluators, FaithfulnessEvaluator, ImageResult, PlausibilityEvaluator,
                                   TimeEvaluator, UnitCounter)
from vqi.metrics.faithfulness import drop, increase, masked_confidences

NAMES = ("background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()


def test_drop_and_increase_terms():
    y = torch.tensor([0.5, 0.5, 0.4, 0.0])
    o = torch.tensor([0.25, 0.7, 0.4, 0.1])
    assert drop(y, o).tolist() == pytest.approx([50.0, 0.0, 0.0, 0.0])
    assert increase(y, o).tolist() == [0.0, 100.0, 0.0, 100.0]


def test_all_ones_map_has_drop_0_and_no_increase(model):
    image = torch.randn(3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :16], masks[1, 16:] = True, True
    y, o = masked_confidences(model, image, torch.ones(2, 32, 32), [1, 2], masks)
    torch.testing.assert_close(o, y)
    assert drop(y, o).tolist() == [0.0, 0.0] and increase(y, o).tolist() == [0.0, 0.0]


def test_confidence_is_the_mean_softmax_over_the_target_mask_and_batching_changes_nothing(model):
    image = torch.randn(3, 32, 32)
    maps = torch.rand(5, 32, 32)
    masks = torch.rand(5, 32, 32) > 0.5
    classes = [1, 2, 3, 4, 1]
    y, o = masked_confidences(model, image, maps, classes, masks, batch_size=2)
    y1, o1 = masked_confidences(model, image, maps, classes, masks, batch_size=16)
    torch.testing.assert_close((y, o), (y1, o1), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        probs = torch.softmax(model(image[None] * maps[2])["out"], 1)[0, 3]
    assert float(o[2]) == pytest.approx(float(probs[masks[2]].mean()), rel=1e-5)


def _result(stem, classes, maps, gt, boxes, y, o, seconds, skipped=None):
    return ImageResult(stem, classes, np.asarray(maps, np.float32), np.asarray(boxes, bool), gt,
                       np.asarray(y), np.asarray(o), seconds, skipped or {})


def test_evaluators_one_pass_overall_per_class_counts_and_median_time():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    gt[2:, 2:] = 2
    box1, box2 = gt == 1, gt == 2
    perfect = [box1, box2]
    ev = Evaluators([PlausibilityEvaluator(NAMES, tau=0.5), FaithfulnessEvaluator(NAMES),
                     TimeEvaluator(), UnitCounter(NAMES)])
    ev.reset()
    ev.process(_result("a", [1, 2], perfect, gt, [box1, box2], [0.5, 0.5], [0.25, 0.6], 2.0,
                       {3: "in_gt_not_predicted"}))
    ev.process(_result("b", [1], [box2], gt, [box1], [0.8], [0.8], 4.0))    # map on the wrong spot
    ev.process(_result("c", [], np.zeros((0, 4, 4)), gt, np.zeros((0, 4, 4)), [], [], 100.0,
                       {1: "predicted_not_in_gt"}))
    out = ev.evaluate()
    assert out["ebpg"] == pytest.approx(200 / 3) and out["ebpg/cable"] == pytest.approx(50.0)
    assert out["ebpg/tower_lattice"] == pytest.approx(100.0)
    assert out["iou"] == pytest.approx(200 / 3) and out["bbox"] == pytest.approx(200 / 3)
    assert out["drop"] == pytest.approx(50 / 3) and out["drop/cable"] == pytest.approx(25.0)
    assert out["increase"] == pytest.approx(100 / 3)
    assert out["time"] == 3.0            # images without units are not timed
    assert out["units"] == 3 and out["units/cable"] == 2 and out["images"] == 3
    assert out["skipped/in_gt_not_predicted"] == 1 and out["skipped/predicted_not_in_gt"] == 1
    ev.reset()
    assert ev.evaluate() == {"images": 0.0, "units": 0.0}
