"""The known-truth study's table: per arm, test IoU against truth and against annotation, the
training labels' quality, the accepted proposals' precision / recall, and the paired difference
to the original model on the same seeds (mean ± sample std, 95% t interval).

A record is one (seed, width factor, arm) result: `{"seed", "width_factor", "arm", "metrics"}`
with metrics as fractions (`iou_*`, `truth/iou_*`, `label_iou_cable`, `enlarge/precision`, ...).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats

from vqi.reporting.tables import Column, Table

MEANS = (
    Column("truth/iou_cable", "cable vs truth", "higher", 1),
    Column("truth/iou_overall", "Overall vs truth", "higher", 1),
    Column("iou_cable", "cable vs annotation", "higher", 1),
    Column("iou_overall", "Overall vs annotation", "higher", 1),
    Column("label_iou_cable", "train label IoU cable", "higher", 1),
    Column("enlarge/precision", "enlarge P", None, 1),
    Column("enlarge/recall", "enlarge R", None, 1),
    Column("perplexed/precision", "perplexed P", None, 1),
    Column("perplexed/recall", "perplexed R", None, 1),
)
"""Columns averaged over seeds (shown in %)."""

DELTAS = (("truth/iou_cable", "Δ cable vs truth"), ("truth/iou_overall", "Δ Overall vs truth"),
          ("iou_cable", "Δ cable vs annotation"))
"""Paired differences to the original on the same seed (percentage points)."""


@dataclass(frozen=True)
class Paired:
    """Mean, sample std and 95% t interval of paired differences over n seeds."""
    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def cell(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (n=1)"
        return f"{self.mean:+.2f} ± {self.std:.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired(arm: Mapping[object, float], original: Mapping[object, float]) -> Paired | None:
    """Paired differences arm − original over the keys (seeds) both have with finite values."""
    keys = [k for k in arm if k in original and math.isfinite(arm[k]) and math.isfinite(original[k])]
    diffs = [arm[k] - original[k] for k in keys]
    if not diffs:
        return None
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(diffs)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return Paired(n, mean, std, mean - half, mean + half)


def seed_values(records: Sequence[dict], key: str) -> dict[int, float]:
    """{seed: 100 x metric} over the records that have a finite value of `key`."""
    out = {}
    for r in records:
        value = r["metrics"].get(key)
        if value is not None and math.isfinite(value):
            out[r["seed"]] = 100 * value
    return out


def study_table(records: Sequence[dict], arms: Mapping[str, str], caption: str,
                notes: Sequence[str] = ()) -> tuple[Table, dict]:
    """The table (one row per arm of `arms`, name -> row label, in that order) and the paired
    statistics behind its Δ cells: {arm: {metric: Paired}}."""
    columns = [Column("seeds", "seeds", None, 0), *MEANS, *(Column(f"delta/{k}", label) for k, label in DELTAS)]
    table = Table("Arm", columns, caption=caption, notes=list(notes))
    deltas: dict = {}
    original = [r for r in records if r["arm"] == "original"]
    for arm, label in arms.items():
        rows = [r for r in records if r["arm"] == arm]
        if not rows:
            continue
        cells: dict[str, float | str] = {"seeds": float(len(rows))}
        for col in MEANS:
            values = seed_values(rows, col.key)
            cells[col.key] = statistics.fmean(values.values()) if values else math.nan
        for key, _ in DELTAS:
            result = None if arm == "original" else paired(seed_values(rows, key), seed_values(original, key))
            deltas.setdefault(arm, {})[key] = result
            cells[f"delta/{key}"] = result.cell() if result else "–"
        table.rows.append((label, cells))
    return table, deltas
