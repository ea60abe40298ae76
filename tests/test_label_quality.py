"""Known-truth measures on hand-made masks whose answers are counted by hand: label IoU,
accepted-proposal precision / recall, and the study's paired statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vqi.classes import CLASS_IDS
from vqi.data.label_quality import LabelIoU, ProposalQuality
from vqi.study.tables import paired, study_table

B, C, L, D, V = 0, 1, 2, 5, 255   # background, cable, lattice, distractor / perplexed, void


def masks_from(rows: list[str]) -> np.ndarray:
    """A mask from rows of characters: . background, c cable, l lattice, d distractor or perplexed, v void."""
    codes = {".": B, "c": C, "l": L, "d": D, "v": V}
    return np.array([[codes[ch] for ch in row] for row in rows], np.uint8)


def test_label_iou_counts_by_hand():
    annotated = masks_from(["c...",
                            "c.ll",
                            "v.ll",
                            "...."])
    truth = masks_from(["cc..",
                        "cclv",
                        "vcll",
                        "dd.."])
    iou = LabelIoU()
    iou.update(annotated, truth)
    m = iou.metrics()
    # Pixels void in either are ignored: (1,3) and (2,0). Cable: A has 2 (both true), R has 5 -> 2/5.
    assert m["iou_cable"] == pytest.approx(2 / 5)
    # Lattice: A has 4 ((1,2),(1,3),(2,2),(2,3)); (1,3) ignored -> 3; R has 3 -> all agree.
    assert m["iou_tower_lattice"] == pytest.approx(1.0)
    # Background: distractors count as background in the truth. A bg = 16-2-4-1 = 9, ignored (1,3)
    # is lattice in A, not bg; R bg = (0,2),(0,3),(3,0..3) = 6; intersection = 6; union = 9.
    assert m["iou_background"] == pytest.approx(6 / 9)
    assert math.isnan(m["iou_tower_wooden"])


def test_proposal_precision_and_recall_by_hand():
    before = masks_from(["c...",
                         "c...",
                         "....",
                         "...."])
    after = masks_from(["cc..",    # (0,1) enlarged: truly cable
                        "c.c.",    # (1,2) enlarged: not cable
                        "..dd",    # (2,2) distractor, (2,3) not
                        "...."])
    truth = masks_from(["ccc.",
                        "cc..",
                        "..d.",
                        "dd.."])
    quality = ProposalQuality((CLASS_IDS["cable"],))
    quality.update(before, after, truth)
    m = quality.metrics()
    # enlarge: accepted {(0,1),(1,2)}; truly cable {(0,1)} -> P 1/2; missed R\A = {(0,1),(0,2),(1,1)} -> R 1/3
    assert m["enlarge/precision"] == pytest.approx(1 / 2) and m["enlarge/recall"] == pytest.approx(1 / 3)
    # perplexed: accepted {(2,2),(2,3)}; D = {(2,2),(3,0),(3,1)}, none annotated -> P 1/2, R 1/3
    assert m["perplexed/precision"] == pytest.approx(1 / 2) and m["perplexed/recall"] == pytest.approx(1 / 3)
    assert m["enlarge/pixels"] == 2 and m["perplexed/missed_pixels"] == 3


def test_nothing_accepted_has_undefined_precision():
    mask = masks_from(["c.", ".."])
    quality = ProposalQuality((C,))
    quality.update(mask, mask, mask)
    assert math.isnan(quality.metrics()["enlarge/precision"]) and math.isnan(quality.metrics()["perplexed/recall"])


def test_paired_difference_and_t_interval_by_hand():
    arm = {1: 12.0, 2: 15.0, 3: 11.0, 4: 14.0, 5: 13.0}
    original = {1: 10.0, 2: 12.0, 3: 10.0, 4: 11.0, 5: 12.0}
    result = paired(arm, original)
    diffs = [2, 3, 1, 3, 1]                                   # mean 2, sample std 1
    assert result.n == 5 and result.mean == pytest.approx(2.0) and result.std == pytest.approx(1.0)
    half = 2.7764451051977987 / math.sqrt(5)                   # t_{0.975, 4} = 2.776445...
    assert (result.low, result.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert result.excludes_zero and sum(diffs) == 10
    assert paired({1: 1.0}, {2: 1.0}) is None


def test_study_table_rows_and_deltas():
    def record(seed, arm, cable):
        return {"seed": seed, "arm": arm,
                "metrics": {"truth/iou_cable": cable, "iou_cable": cable, "truth/iou_overall": 0.5,
                            "iou_overall": 0.5}}
    records = [record(s, "original", 0.10 + 0.01 * s) for s in (1, 2, 3)]
    records += [record(s, "dilate", 0.12 + 0.01 * s) for s in (1, 2, 3)]
    arms = {"original": "Original (annotation as is)", "dilate": "Blind dilation (no explanation)", "truth": "Truth"}
    table, deltas = study_table(records, arms, "caption")
    assert [name for name, _ in table.rows] == ["Original (annotation as is)", "Blind dilation (no explanation)"]
    delta = deltas["dilate"]["truth/iou_cable"]
    assert delta.mean == pytest.approx(2.0) and delta.std == pytest.approx(0.0, abs=1e-9)
    assert "+2.00 ± 0.00" in table.markdown() and deltas["original"]["truth/iou_cable"] is None
