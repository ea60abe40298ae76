"""Settings of a confirmatory study chosen on development seeds, by rules fixed beforehand, from
their budget curves (`stage=budget`, no retraining):

- budget B: of the candidate budgets, the one where the rankers' mean label IoU differs most
  (best minus worst ranker): where the order of review matters most;
- the no-expert thresholds (`cam_threshold`, `width_threshold`): per ranker, the threshold of the
  grid with the highest mean training label IoU against truth.

Every number comes from the development seeds only; the confirmatory seeds are never read here.
"""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence

CANDIDATE_BUDGETS = (0.1, 0.2, 0.3)
"""The budgets B may be: an expert's afternoon, not the whole split."""


def choose_budget(results: Mapping[int, dict], candidates: Sequence[float] = CANDIDATE_BUDGETS) -> tuple[float, dict]:
    """The candidate budget with the largest spread of the rankers' mean label IoU, and the spreads."""
    first = next(iter(results.values()))
    spreads = {}
    for budget in candidates:
        i = first["budgets"].index(budget)
        means = [statistics.fmean(r["rankers"][name]["curve"][i] for r in results.values()) for name in first["rankers"]]
        spreads[budget] = max(means) - min(means)
    return max(spreads, key=lambda b: (spreads[b], -b)), spreads


def choose_threshold(results: Mapping[int, dict], ranker: str) -> tuple[float, dict]:
    """The threshold of `ranker`'s grid with the highest mean label IoU (ties: the lower), and the means."""
    grid = next(iter(results.values()))["thresholds"][ranker]
    means = {float(t): statistics.fmean(r["thresholds"][ranker][t] for r in results.values()) for t in grid}
    return max(means, key=lambda t: (means[t], -t)), means


def choose_settings(results: Mapping[int, dict]) -> tuple[dict, list[str]]:
    """The protocol's settings and one line per choice saying why."""
    budget, spreads = choose_budget(results)
    cam, cam_means = choose_threshold(results, "cam")
    width, width_means = choose_threshold(results, "width")
    fmt = lambda d: ", ".join(f"{k:g}: {v:.2f}" for k, v in d.items())
    why = [f"development seeds {sorted(results)}",
           f"budget {budget:g}: spread of the rankers' mean label IoU (points) per candidate budget {fmt(spreads)}",
           f"cam_threshold {cam:g}: mean label IoU per threshold {fmt(cam_means)}",
           f"width_threshold {width:g}: mean label IoU per threshold {fmt(width_means)}"]
    return {"budget": budget, "cam_threshold": cam, "width_threshold": width}, why
