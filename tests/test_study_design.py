"""Choosing a confirmatory study's settings from development seeds' budget curves, by the fixed rules."""
from __future__ import annotations

import pytest

from vqi.study.design import choose_budget, choose_settings, choose_threshold


def result(offset: float) -> dict:
    budgets = [0.0, 0.1, 0.2, 0.3, 1.0]
    return {"budgets": budgets,
            "rankers": {"cam": {"curve": [50, 52, 55, 58, 60]}, "softmax": {"curve": [50, 56, 57, 59, 60]},
                        "random": {"curve": [50, 51 + offset, 52, 56, 60]}},
            "thresholds": {"cam": {"0.3": 51.0, "0.5": 53.0 + offset, "0.7": 52.0},
                           "width": {"1": 40.0, "2": 55.0, "3": 55.0}}}


def test_the_budget_is_where_the_rankers_differ_most_and_thresholds_maximise_label_iou():
    results = {1: result(0.0), 2: result(1.0)}
    budget, spreads = choose_budget(results)
    assert spreads[0.1] == pytest.approx(56 - 51.5) and spreads[0.2] == pytest.approx(5) and budget == 0.2
    assert choose_threshold(results, "cam")[0] == 0.5
    assert choose_threshold(results, "width")[0] == 2.0                  # a tie goes to the lower threshold
    settings, why = choose_settings(results)
    assert settings == {"budget": 0.2, "cam_threshold": 0.5, "width_threshold": 2.0}
    assert why[0] == "development seeds [1, 2]" and "budget 0.2" in why[1]


def test_the_budget_figure_has_the_curves_and_the_paired_differences(tmp_path):
    from PIL import Image

    from vqi.study.budget_table import budget_figure, budget_table

    results = {seed: {**result(seed / 10), "class_name": "cable",
                      "rankers": {name: {**r, "aubc": sum(r["curve"]) / 5, "auc": {"enlarge": 0.6, "unlabelled": 0.5}}
                                  for name, r in result(seed / 10)["rankers"].items()}} for seed in (1, 2, 3)}
    path = budget_figure(results, tmp_path / "f.png", "title")
    assert Image.open(path).size == (1440, 540)                          # two panels side by side
    text = budget_table(results, "caption").markdown()
    assert "| cam |" in text and "AUBC cam − softmax" in text and "AUBC cam − random" in text
