"""The simulated expert's k and label against hand-computed answers, the budget it reviews, and the
budget curve's area and ranking AUC on known cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vqi.augment import regions
from vqi.augment.proposals import ACCEPT, ENLARGE, PENDING, REJECT, UNLABELLED, Proposal
from vqi.study import oracle
from vqi.study.budget import SplitImage, aubc, label_iou_after, ranking_auc

IDS = {"background": 0, "cable": 1}


def line(rows, n=30):
    mask = np.zeros((n, n), bool)
    mask[rows, 3:27] = True
    return mask


def test_best_k_matches_the_true_width_of_the_cable():
    instance = line(slice(15, 16))                       # annotated 1 px wide
    label = instance.astype(np.uint8)
    assert oracle.best_k(instance, label, line(slice(15, 16)), 3) == 0      # the truth is the annotation
    assert oracle.best_k(instance, label, line(slice(14, 17)), 3) == 1      # 3 px true: grow 1 a side
    assert oracle.best_k(instance, label, line(slice(13, 18)), 3) == 2      # 5 px true: grow 2
    assert oracle.best_k(instance, label, line(slice(5, 6)), 3) == 0        # truth elsewhere: reject


def test_best_k_by_brute_force_on_random_cases():
    """Against IoU computed directly for every k (k_max dilation as the reach)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        instance = line(slice(14, 15 + rng.integers(0, 2)))
        label = instance.astype(np.uint8)
        label[rng.random(label.shape) < 0.05] = 2        # other objects the ring may not take
        label[instance] = 1
        truth = regions.dilate(instance, int(rng.integers(0, 4))) & (rng.random(label.shape) < 0.8)
        reach = regions.dilate(instance, 3)
        ious = []
        for k in range(4):
            labelled = instance | (regions.dilate(instance, k) & ~instance & (label == 0))
            t = truth & reach
            ious.append((labelled & t).sum() / max((labelled | t).sum(), 1))
        assert oracle.best_k(instance, label, truth, 3) == int(np.argmax(ious))


def test_region_label_by_the_majority_of_its_true_pixels():
    region = line(slice(5, 7))
    truth = np.zeros(region.shape, np.uint8)
    assert oracle.region_label(region, truth, 1, "cable") == ""
    truth[region] = 1
    assert oracle.region_label(region, truth, 1, "cable") == "cable"
    truth[region] = oracle.DISTRACTOR
    assert oracle.region_label(region, truth, 1, "cable") == "perplexed"
    truth[5, :] = 0                                      # half distractor: still at least half
    assert oracle.region_label(region, truth, 1, "cable") == "perplexed"


def _proposals(n):
    return [Proposal(f"a/enlarge/{i}" if i % 2 else f"a/unlabelled-cable/{i}", "a", ENLARGE if i % 2 else UNLABELLED,
                     "cable", 0.0, "", [0, 0, 1, 1], 1, annotation_id=i, k=1) for i in range(n)]


def test_the_budget_reviews_ceil_b_n_in_the_given_order_and_leaves_the_rest_pending():
    props = _proposals(10)
    verdicts = {p.proposal_id: oracle.Verdict(k=2) if p.kind == ENLARGE else oracle.Verdict(label="perplexed")
                for p in props}
    order = list(range(9, -1, -1))
    oracle.apply_verdicts(props, order, verdicts, 0.25)                  # ceil(2.5) = 3
    assert [p.decision for p in props] == [PENDING] * 7 + [ACCEPT] * 3
    assert props[9].k == 2 and props[8].label == "perplexed"
    assert oracle.reviewed(10, 0.0) == 0 and oracle.reviewed(10, 1.0) == 10 and oracle.reviewed(7, 0.3) == 3
    with pytest.raises(ValueError, match="augment.oracle.budget"):
        oracle.reviewed(10, 1.5)


def test_flip_replaces_a_verdict_by_a_wrong_one_with_its_probability():
    props = _proposals(400)
    right = {p.proposal_id: oracle.Verdict(k=1) if p.kind == ENLARGE else oracle.Verdict() for p in props}
    assert oracle.flipped(right, props, 3, 0.0, 1) == right
    always = oracle.flipped(right, props, 3, 1.0, 1)
    assert all(always[k] != right[k] for k in right)
    assert {v.k for p, v in zip(props, always.values()) if p.kind == ENLARGE} == {0, 2, 3}
    some = oracle.flipped(right, props, 3, 0.25, 1)
    assert 0.18 < np.mean([some[k] != right[k] for k in right]) < 0.32
    assert {k for k in right if some[k] != right[k]} <= set(right)
    with pytest.raises(ValueError, match="augment.oracle.flip"):
        oracle.flipped(right, props, 3, 2.0, 1)


def test_label_iou_after_applies_only_accepted_proposals():
    instance = line(slice(15, 16))
    label = instance.astype(np.uint8)
    truth = line(slice(14, 17)).astype(np.uint8)
    ann = {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": regions.rle_segmentation(instance),
           "area": int(instance.sum()), "bbox": regions.bbox(instance)}
    image = SplitImage("a", label, truth, {7: ann})
    ring = regions.enlargement(instance, label, 1)
    p = Proposal("a/enlarge/7", "a", ENLARGE, "cable", 0.0, regions.encode(ring), regions.bbox(ring), int(ring.sum()),
                 annotation_id=7, k=1)
    names = {0: "background", 1: "cable"}
    assert label_iou_after([image], [p], names)["iou_cable"] == pytest.approx(24 / 72)   # pending
    p.decision = ACCEPT
    assert label_iou_after([image], [p], names)["iou_cable"] == pytest.approx(72 / 74)   # the disc grows the ends too
    p.decision = REJECT
    assert label_iou_after([image], [p], names)["iou_cable"] == pytest.approx(24 / 72)


def test_aubc_is_the_trapezoid_area_and_needs_budgets_from_0_to_1():
    assert aubc([0, 0.5, 1], [10, 20, 20]) == pytest.approx(0.5 * 15 + 0.5 * 20)
    with pytest.raises(ValueError, match="budget.budgets"):
        aubc([0.1, 1], [1, 2])


def test_ranking_auc_counts_good_above_bad_with_ties_half():
    assert ranking_auc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert ranking_auc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert ranking_auc([1, 1], [True, False]) == 0.5
    assert ranking_auc([float("nan"), 1], [True, False]) == 0.0          # NaN ranks lowest
    assert math.isnan(ranking_auc([1, 2], [True, True]))
