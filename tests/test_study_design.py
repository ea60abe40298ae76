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
