"""Table I: one row per CAM method, the paper's six metric columns, the best of each marked,
and the method that wins most columns (the one the augment stage uses).

Winner rule: most columns won (a tie for a column's best counts for every tied method); then the
best mean rank over the six columns; then table order. Time counts only when every row was
timed on the same device (times from different devices are never compared).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vqi.xai.catalogue import xai_catalogue
from vqi.reporting.tables import Column, Table

METRICS = (
    Column("ebpg", "EBPG↑", "higher"),
    Column("bbox", "Bbox↑", "higher"),
    Column("iou", "IoU↑", "higher"),
    Column("drop", "Drop↓", "lower"),
    Column("increase", "Inc↑", "higher"),
    Column("time", "Time(s)↓", "lower", digits=3),
)


@dataclass(frozen=True)
class MethodResult:
    """One method's evaluate run: its metrics (as logged) and where its times were taken."""

    method: str
    metrics: dict[str, float]
    device: str
    run_id: str = ""


def label(method: str) -> str:
    """The method's row name: its `label` in conf/xai/<method>.yaml (else the name itself)."""
    found = xai_catalogue().get(method)
    return found.label if found else method


def build_table1(results: Sequence[MethodResult], caption: str = "Table I",
                 notes: Sequence[str] = ()) -> Table:
    """The table; Time is not ranked when the rows' devices differ (said in a note)."""
    if not results:
        raise ValueError("Table I: no evaluate runs to report")
    same_device = len({r.device for r in results}) == 1
    columns = [c if c.key != "time" or same_device else Column(c.key, c.label, None, c.digits) for c in METRICS]
    columns.append(Column("units", "Units", None, digits=0))
    table = Table("Method", columns, caption=caption, notes=list(notes))
    for r in results:
        table.rows.append((label(r.method), dict(r.metrics)))
    if same_device:
        table.notes.append(f"Time: median seconds per image to explain all its units, on {results[0].device}.")
    else:
        table.notes.append("Time not compared: rows were timed on different devices ("
                           + "; ".join(f"{label(r.method)}: {r.device}" for r in results) + ").")
    return table


def choose_method(table: Table, results: Sequence[MethodResult]) -> tuple[str, dict[str, int]]:
    """(winning method, columns won per method) by the rule in the module docstring."""
    ranked = [c for c in table.columns if c.better is not None]
    by_label = {label(r.method): r.method for r in results}
    wins = {r.method: 0 for r in results}
    for col in ranked:
        for name in table.best(col.key):
            wins[by_label[name]] += 1

    def mean_rank(method: str) -> float:
        ranks = []
        for col in ranked:
            values = sorted({r.metrics[col.key] for r in results if col.key in r.metrics},
                            reverse=col.better == "higher")
            mine = next(r for r in results if r.method == method).metrics.get(col.key)
            ranks.append(values.index(mine) + 1 if mine in values else len(values) + 1)
        return sum(ranks) / len(ranks) if ranks else 0.0

    order = {r.method: i for i, r in enumerate(results)}
    winner = min(wins, key=lambda m: (-wins[m], mean_rank(m), order[m]))
    return winner, wins
