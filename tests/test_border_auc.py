"""Pixel AUC on cable borders: the AUC against scikit-learn's, a hand-made border whose truth is
one pixel wider on one side than its annotation, and the budget table's column and note."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from vqi.augment import regions
from vqi.augment.proposals import UNLABELLED, EnlargeRule, Proposal, propose_enlargements
from vqi.study.border_auc import BorderAUC, maps_of
from vqi.study.budget import ranking_auc
from vqi.study.budget_table import budget_table
from vqi.study.rankers import CAM, PROBS, Evidence

IDS = {"background": 0, "cable": 1, "tower_lattice": 2}


def test_ranking_auc_equals_sklearns_roc_auc_with_ties():
    rng = np.random.default_rng(0)
    for size, levels in ((50, 3), (400, 10), (1000, 1000)):
        scores = rng.integers(0, levels, size).astype(float)     # few levels: many ties
        good = rng.random(size) < 0.3
        assert ranking_auc(scores, good) == pytest.approx(roc_auc_score(good, scores), abs=1e-12)


def border_case():
    """A 20 x 20 image: a true cable on rows 10-12 (columns 2-17), annotated one pixel thinner at
    the bottom (rows 10-11), a tower (class 2) on rows 8-9, columns 2-5, above it. The 1-px ring
    outside the annotation: row 9 (less the tower), row 12 (truly cable) and the two end pixels
    of each annotated row."""
    truth = np.zeros((20, 20), np.uint8)
    truth[10:13, 2:18] = 1
    truth[8:10, 2:6] = 2
    label = truth.copy()
    label[12] = 0
    instance = label == 1
    proposals = propose_enlargements("img", label, [(7, instance)], "cable", EnlargeRule(k=2, k_max=3))
    region = np.zeros((20, 20), bool)
    region[0:2, 0:5] = True
    proposals.append(Proposal("img/unlabelled-cable/0", "img", UNLABELLED, "cable", 0.0, regions.encode(region),
                              regions.bbox(region), int(region.sum())))
    return truth, label, instance, proposals


def evidence_with(label, instance, cam, probs=None):
    return Evidence(label, IDS, probs=probs, cams={"cable": cam}, instances={7: instance})


def test_a_map_high_exactly_on_the_true_cable_ring_pixels_scores_1_and_a_constant_one_half():
    truth, label, instance, proposals = border_case()
    assert proposals[0].k == 2                                           # the proposal's own ring is wider
    high = ((truth == 1) | (truth == 2)).astype(np.float32)          # high on the tower too, outside the ring
    high[8, 2:18] = 1.0                                               # and on the k = 2 ring's non-cable row
    probs = np.stack([1 - high, high, np.zeros_like(high)])
    border = BorderAUC(["cam", "softmax"])
    border.update(proposals, evidence_with(label, instance, high, probs), truth, IDS)
    assert border.counts() == {"pixels": 12 + 16 + 4, "true_thin": 16}
    assert border.aucs() == {"cam": 1.0, "softmax": 1.0}

    inverted = BorderAUC(["cam"])
    inverted.update(proposals, evidence_with(label, instance, 1 - high), truth, IDS)
    assert inverted.aucs() == {"cam": 0.0}

    for cam in (np.full((20, 20), 0.3, np.float32), None):               # None: cable not predicted
        constant = BorderAUC(["cam"])
        constant.update(proposals, evidence_with(label, instance, cam), truth, IDS)
        assert constant.aucs() == {"cam": 0.5}


def test_a_border_without_true_cable_has_no_auc_and_the_maps_follow_the_evidence():
    truth, label, instance, proposals = border_case()
    border = BorderAUC(["cam"])
    border.update(proposals, evidence_with(label, instance, np.zeros((20, 20))), label, IDS)  # truth = annotation
    assert border.counts()["true_thin"] == 0 and math.isnan(border.aucs()["cam"])
    assert maps_of({CAM, PROBS}) == ["cam", "softmax"] and maps_of(set()) == []
    with pytest.raises(ValueError, match="unknown border maps \\['cleanlab'\\]"):
        BorderAUC(["cleanlab"])


def test_the_budget_table_adds_the_pixel_auc_of_each_rankers_map_with_its_interval():
    def result(pixel):
        seed = {"budgets": [0.0, 1.0], "rankers": {name: {"curve": [50, 60], "aubc": 55.0,
                                                          "auc": {"enlarge": 0.6, "unlabelled": 0.5}}
                                                   for name in ("cam", "softmax", "random")}}
        return {**seed, "pixel_auc_border": pixel} if pixel else seed

    table = budget_table({1: result({"cam": 0.6, "softmax": 0.7}), 2: result({"cam": 0.5, "softmax": 0.8})}, "c")
    rows = dict(table.rows)
    assert rows["cam"]["pixel_auc"] == pytest.approx(0.55) and rows["softmax"]["pixel_auc"] == pytest.approx(0.75)
    assert "pixel_auc" not in rows["random"]                            # random averages no map
    half = stats.t.ppf(0.975, 1) * np.std([0.6, 0.5], ddof=1) / math.sqrt(2)
    note = next(n for n in table.notes if n.startswith("Pixel AUC on cable borders"))
    assert f"cam 0.550 [{0.55 - half:.3f}, {0.55 + half:.3f}] (n=2)" in note
    assert "| Pixel AUC border↑ |" in table.markdown().splitlines()[2]
    old = budget_table({1: result(None), 2: result(None)}, "c")        # budget.json from before the metric
    assert "Pixel AUC" not in old.markdown()
