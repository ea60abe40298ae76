"""Table II: per-class test IoU (%) of the original and the enhanced model, in the paper's layout.

Overall is the mean IoU of the four foreground classes (docs/metrics.md); background
IoU and the five-class mIoU stand beside it, never instead of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from vqi.reporting.tables import Column, Table

COLUMNS = (
    Column("iou_cable", "cable", "higher"),
    Column("iou_tower_wooden", "tower_wooden", "higher"),
    Column("iou_tower_lattice", "tower_lattice", "higher"),
    Column("iou_tower_tucohy", "tower_tucohy", "higher"),
    Column("iou_overall", "Overall", "higher", digits=3),
    Column("iou_background", "background", "higher"),
    Column("miou_5", "mIoU (5 classes)", "higher"),
)


@dataclass(frozen=True)
class ModelResult:
    """One model's test run: its IoU metrics as fractions, and where they come from."""

    name: str
    metrics: dict[str, float]
    run_id: str
    checkpoint: str


def build_table2(results: list[ModelResult], notes: list[str],
                 caption: str = "Table II: test IoU (%) of the original and enhanced models") -> Table:
    table = Table("Model", COLUMNS, caption=caption, notes=list(notes))
    for result in results:
        table.rows.append((result.name, {c.key: 100 * result.metrics[c.key]
                                         for c in COLUMNS if c.key in result.metrics}))
        table.notes.append(f"{result.name}: MLflow run {result.run_id}, checkpoint {result.checkpoint}.")
    return table
