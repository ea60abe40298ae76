"""Plausibility metrics on hand-made maps with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from vqi.metrics.boxes import box_masks
from vqi.metrics.plausibility import bbox, ebpg, iou


def _box(h=8, w=8, rows=slice(2, 5), cols=slice(1, 4)):
    b = np.zeros((1, h, w), dtype=bool)
    b[0, rows, cols] = True
    return b


def test_ebpg_map_inside_box_is_100_outside_is_0_and_half_is_50():
    box = _box()
    inside = box.astype(np.float32) * 0.7
    assert ebpg(inside, box)[0] == pytest.approx(100.0)
    assert ebpg((~box).astype(np.float32), box)[0] == pytest.approx(0.0)
    half = np.zeros((1, 8, 8), np.float32)
    half[0, 2, 1] = 1.0   # in the box
    half[0, 7, 7] = 1.0   # outside
    assert ebpg(half, box)[0] == pytest.approx(50.0)
    assert ebpg(np.zeros((1, 8, 8), np.float32), box)[0] == 0.0   # no energy: 0, not NaN


def test_iou_perfect_map_is_100_and_threshold_is_inclusive():
    gt = _box()
    assert iou(gt.astype(np.float32), gt)[0] == pytest.approx(100.0)
    at_tau = gt * np.float32(0.5)
    assert iou(at_tau, gt, tau=0.5)[0] == pytest.approx(100.0)      # L >= tau counts
    assert iou(at_tau, gt, tau=0.51)[0] == pytest.approx(0.0)
    wider = gt.copy()
    wider[0, 2:5, 4:7] = True     # 9 extra pixels next to the 9 of gt
    assert iou(wider.astype(np.float32), gt)[0] == pytest.approx(50.0)


def test_bbox_perfect_map_is_100_and_ties_follow_pixel_order():
    box = _box()
    assert bbox(box.astype(np.float32), box)[0] == pytest.approx(100.0)
    flat = np.ones((1, 8, 8), np.float32)   # all tied: the first N pixels in row-major order win
    n = int(box.sum())                      # 9 pixels; rows 0-1 come first, none in the box
    assert bbox(flat, box)[0] == pytest.approx(0.0)
    top_left = np.zeros((1, 8, 8), dtype=bool)
    top_left[0, 0:2, :] = True
    assert bbox(flat, top_left)[0] == pytest.approx(100.0)
    ramp = np.zeros((1, 8, 8), np.float32)
    ramp[0][box[0]] = np.linspace(1, 0.2, n)
    ramp[0, 7, 7] = 0.9                    # beats all but one box pixel: 8 of 9 in the top 9
    assert bbox(ramp, box)[0] == pytest.approx(100.0 * 8 / 9)
    with pytest.raises(ValueError, match="empty box"):
        bbox(flat, np.zeros((1, 8, 8), dtype=bool))


def test_box_masks_union_rounds_to_pixel_centres_and_ignores_void():
    anns = [{"category_id": 1, "bbox": [1.0, 2.0, 3.0, 3.0]},
            {"category_id": 1, "bbox": [5.6, 5.6, 0.2, 0.2]},     # covers no centre: still one pixel
            {"category_id": 255, "bbox": [0, 0, 8, 8]},
            {"category_id": 2, "bbox": [6.0, 0.0, 5.0, 2.0]}]     # clipped at the right edge
    boxes = box_masks(anns, 8, 8, classes=[1, 2, 3])
    expected = _box()[0]
    expected[6, 6] = True
    np.testing.assert_array_equal(boxes[1], expected)
    assert boxes[2].sum() == 4 and boxes[2][0:2, 6:8].all()
    assert not boxes[3].any()
