"""IoU from one confusion matrix, exactly as docs/metrics.md 'Segmentation quality'."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqi.engine.confusion import ConfusionMatrix


def independent_iou(targets: list[np.ndarray], preds: list[np.ndarray], num_classes: int = 5) -> list[float]:
    """Per-class IoU by counting pixels with boolean masks over the whole set (no bincount)."""
    out = []
    for c in range(num_classes):
        inter = union = 0
        for t, p in zip(targets, preds):
            t = np.where(t == 5, 0, t)
            p = np.where(p == 5, 0, p)
            valid = t != 255
            inter += int(((t == c) & (p == c) & valid).sum())
            union += int((((t == c) | (p == c)) & valid).sum())
        out.append(inter / union if union else math.nan)
    return out


def test_known_matrix_and_metrics():
    target = torch.tensor([0, 0, 1, 1, 2, 255, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 4, 3])
    cm = ConfusionMatrix(5)
    cm.update(target, pred)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0), (3, 3)]:
        expected[t, p] += 1
    assert torch.equal(cm.mat, expected)
    m = cm.metrics()
    assert m["iou_background"] == pytest.approx(1 / 3)   # TP 1, FP 1 (from 2), FN 1 (to 1)
    assert m["iou_cable"] == pytest.approx(2 / 3)
    assert m["iou_tower_lattice"] == 0.0
    assert m["iou_tower_tucohy"] == 1.0
    assert math.isnan(m["iou_tower_wooden"])              # absent from target and (valid) prediction
    assert m["iou_overall"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert m["miou_5"] == pytest.approx((1 / 3 + 2 / 3 + 0 + 1) / 4)


def test_split_is_one_matrix_not_a_mean_of_images():
    # image A: cable perfect on 1 pixel; image B: cable 1 of 9 pixels right.
    a_t, a_p = torch.tensor([1, 0]), torch.tensor([1, 0])
    b_t, b_p = torch.ones(9, dtype=torch.long), torch.tensor([1] + [0] * 8)
    cm = ConfusionMatrix()
    cm.update(a_t, a_p)
    cm.update(b_t, b_p)
    assert cm.metrics()["iou_cable"] == pytest.approx(2 / 10)  # not (1 + 1/9) / 2


def test_perplexed_counts_as_background():
    cm = ConfusionMatrix()
    cm.update(torch.tensor([0, 0, 5, 1]), torch.tensor([5, 0, 0, 5]))
    assert cm.mat[0, 0] == 3 and cm.mat[1, 0] == 1


def test_random_predictions_match_an_independent_count():
    rng = np.random.default_rng(3)
    targets = [rng.choice([0, 1, 2, 3, 255], size=(7, 9)) for _ in range(4)]
    preds = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    cm = ConfusionMatrix()
    for t, p in zip(targets, preds):
        cm.update(torch.from_numpy(t), torch.from_numpy(p))
    got = cm.iou().tolist()
    want = independent_iou(targets, preds)
    assert np.allclose(got, want, equal_nan=True)
    fg = [v for v in want[1:] if not math.isnan(v)]
    assert cm.metrics()["iou_overall"] == pytest.approx(sum(fg) / len(fg))


def test_out_of_range_ids_are_an_error():
    with pytest.raises(ValueError, match="class ids outside"):
        ConfusionMatrix().update(torch.tensor([7]), torch.tensor([0]))
