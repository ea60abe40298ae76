"""Table III: can the explanations be trusted? Per method, the sanity-check correlation at full
randomisation, deletion and insertion AUC and the pointing game (docs/metrics.md,
"Trusting the explanations"), beside a Random-CAM floor. Table I keeps the paper's layout.

A method passes the sanity check when its mean |rho| at full randomisation is below a threshold;
it beats Random-CAM when it is strictly better on deletion, insertion and pointing alike.
"""
from __future__ import annotations

import math
from typing import Sequence

from vqi.reporting.table1 import MethodResult, label
from vqi.reporting.tables import Column, Table

COLUMNS = (
    Column("final_abs_rho", "Sanity abs(ρ)↓", "lower", missing="undefined"),
    Column("final_rho", "Sanity ρ", None, missing="undefined"),
    Column("final_ssim", "Sanity SSIM", None),
    Column("deletion", "Deletion AUC (%)↓", "lower"),
    Column("insertion", "Insertion AUC (%)↑", "higher"),
    Column("pointing", "Pointing (%)↑", "higher"),
    Column("units", "Units", None, digits=0),
)
FLOOR_KEYS = ("deletion", "insertion", "pointing")
"""The columns on which a method must beat Random-CAM."""


def build_table3(results: Sequence[MethodResult], notes: Sequence[str] = ()) -> Table:
    if not results:
        raise ValueError("Table III: no evaluate runs to report")
    table = Table("Method", COLUMNS, caption="Table III: sanity check, deletion / insertion and pointing game",
                  notes=list(notes))
    for r in results:
        table.rows.append((label(r.method), dict(r.metrics)))
    return table


def sanity_verdict(metrics: dict[str, float], max_abs_rho: float) -> bool | None:
    """True: |rho| at full randomisation < max_abs_rho; False: not; None: not run or undefined."""
    value = metrics.get("final_abs_rho")
    if value is None or not math.isfinite(value):
        return None
    return value < max_abs_rho


def floor_shortfalls(metrics: dict[str, float], floor: dict[str, float]) -> list[str]:
    """The FLOOR_KEYS on which `metrics` is not strictly better than Random-CAM's `floor`
    (missing values count as not better)."""
    better = {c.key: c.better for c in COLUMNS}
    out = []
    for key in FLOOR_KEYS:
        mine, base = metrics.get(key), floor.get(key)
        ok = (mine is not None and base is not None and math.isfinite(mine) and math.isfinite(base)
              and (mine < base if better[key] == "lower" else mine > base))
        if not ok:
            out.append(key)
    return out
