"""A small table model written as Markdown, CSV and LaTeX, with the best value of a column marked.

Shared by Table I (methods x XAI metrics) and Table II (models x IoU): columns say whether
higher or lower is better (or neither); `write_table` writes `<stem>.md/.csv/.tex` atomically.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vqi.utils.atomic import write_text


@dataclass(frozen=True)
class Column:
    key: str
    label: str                  # Markdown/CSV header, e.g. "EBPG↑"
    better: str | None = None   # "higher" | "lower" | None (not ranked)
    digits: int = 2
    latex: str | None = None    # LaTeX header; defaults to `label` with arrows as math
    missing: str = "–"          # the cell of a missing or non-finite value (e.g. "undefined")


@dataclass
class Table:
    row_label: str
    columns: Sequence[Column]
    rows: list[tuple[str, dict[str, float | str]]] = field(default_factory=list)
    """(row name, {column key: value}); a str value is a cell already formatted (e.g. "1.2 ± 0.3")."""
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def best(self, key: str) -> set[str]:
        """Row names holding the best finite value of a ranked column (all of them on a tie)."""
        col = next(c for c in self.columns if c.key == key)
        values = {name: vals.get(key) for name, vals in self.rows}
        finite = {n: v for n, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if col.better is None or not finite:
            return set()
        target = max(finite.values()) if col.better == "higher" else min(finite.values())
        return {n for n, v in finite.items() if round(v, col.digits) == round(target, col.digits)}

    def _cell(self, col: Column, value: float | str | None) -> str:
        if isinstance(value, str):
            return value
        if value is None:
            return "–"
        return col.missing if not math.isfinite(value) else f"{value:.{col.digits}f}"

    def markdown(self) -> str:
        best = {c.key: self.best(c.key) for c in self.columns}
        lines = [f"| {self.row_label} | " + " | ".join(c.label for c in self.columns) + " |",
                 "|---|" + "---|" * len(self.columns)]
        for name, vals in self.rows:
            cells = [(f"**{self._cell(c, vals.get(c.key))}**" if name in best[c.key] else self._cell(c, vals.get(c.key)))
                     for c in self.columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        head = [f"**{self.caption}**", ""] if self.caption else []
        ranked = any(c.better is not None for c in self.columns)
        tail = ["", *(["Best of each column in bold."] if ranked else []), *[f"- {n}" for n in self.notes]]
        return "\n".join(head + lines + tail) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([self.row_label, *[c.label for c in self.columns], "best_in"])
        best = {c.key: self.best(c.key) for c in self.columns}
        for name, vals in self.rows:
            writer.writerow([name, *[self._cell(c, vals.get(c.key)).replace("–", "") for c in self.columns],
                             ";".join(c.key for c in self.columns if name in best[c.key])])
        return out.getvalue()

    def latex(self) -> str:
        best = {c.key: self.best(c.key) for c in self.columns}

        def header(c: Column) -> str:
            return c.latex or _tex(c.label).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")

        lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * len(self.columns) + "}",
                 r"\hline", f"{_tex(self.row_label)} & " + " & ".join(header(c) for c in self.columns) + r" \\",
                 r"\hline"]
        for name, vals in self.rows:
            cells = [(rf"\textbf{{{self._cell(c, vals.get(c.key))}}}" if name in best[c.key]
                      else self._cell(c, vals.get(c.key))).replace("–", "--") for c in self.columns]
            lines.append(f"{_tex(name)} & " + " & ".join(cells) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        if self.caption:
            lines.append(rf"\caption{{{_tex(self.caption)}}}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def write_table(table: Table, directory: str | Path, stem: str) -> list[Path]:
    """`<directory>/<stem>.md`, `.csv` and `.tex`, each written atomically; returns the paths."""
    paths = []
    for suffix, text in (("md", table.markdown()), ("csv", table.csv()), ("tex", table.latex())):
        path = Path(directory) / f"{stem}.{suffix}"
        write_text(path, text)
        paths.append(path)
    return paths
