"""The review-budget table and figure over seeds: per ranker its mean budget curve with a 95% t
band, its AUBC (mean and 95% t interval), its AUC for good proposals, the pixel AUC on cable borders
of the map it averages (cam, cam_fine, lots, softmax; seeds whose budget.json predates it have
none), and the paired AUBC differences the study asks about (cam − softmax, cam − cleanlab,
cam − random, cam_fine − softmax, and where ranker lots ran, lots − cam and lots − softmax)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

from vqi.reporting.tables import Column, Table  # noqa: E402
from vqi.study.tables import paired  # noqa: E402

COMPARISONS = (("cam", "softmax"), ("cam", "cleanlab"), ("cam", "random"), ("cam_fine", "softmax"),
               ("lots", "cam"), ("lots", "softmax"))
"""Paired AUBC differences: what the explanation adds over the rankers that need none."""


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half width of its 95% t interval (NaN half width for one value)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    if len(values) < 2:
        return values[0], math.nan
    return statistics.fmean(values), stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def budget_table(results: Mapping[int, dict], caption: str, notes: Sequence[str] = ()) -> Table:
    """One row per ranker: label IoU at each budget (mean over seeds), AUBC ± 95% t, AUC per kind,
    the mean pixel AUC on cable borders of its map (where a seed measured it), and notes with each
    map's pixel AUC interval and each paired comparison of AUBC."""
    first = next(iter(results.values()))
    budgets, rankers = first["budgets"], list(first["rankers"])
    pixel = pixel_auc_by_map(results)
    columns = [*(Column(f"b{b:g}", f"B={100 * b:g}%", None) for b in budgets),
               Column("aubc", "AUBC↑", "higher"), Column("ci", "95% CI"),
               Column("auc_enlarge", "AUC enlarge↑", "higher", 3), Column("auc_unlabelled", "AUC unlabelled↑", "higher", 3),
               *([Column("pixel_auc", "Pixel AUC border↑", "higher", 3)] if pixel else [])]
    table = Table("Ranker", columns, caption=caption, notes=list(notes))
    for name in rankers:
        per_seed = [r["rankers"][name] for r in results.values() if name in r["rankers"]]
        cells: dict[str, float | str] = {f"b{b:g}": statistics.fmean(s["curve"][i] for s in per_seed)
                                         for i, b in enumerate(budgets)}
        mean, half = mean_interval([s["aubc"] for s in per_seed])
        cells.update(aubc=mean, ci=f"[{mean - half:.2f}, {mean + half:.2f}]" if math.isfinite(half) else "–")
        for kind in ("enlarge", "unlabelled"):
            cells[f"auc_{kind}"] = mean_interval([s["auc"][kind] for s in per_seed])[0]
        if name in pixel:
            cells["pixel_auc"] = mean_interval(pixel[name])[0]
        table.rows.append((name, cells))
    if pixel:
        table.notes.append("Pixel AUC on cable borders (the 1-px ring outside each annotated thin instance; "
                           "true thin pixels against the others), mean and 95% t interval over seeds: "
                           + "; ".join(f"{name} {_interval(pixel[name], 3)}" for name in pixel) + ".")
    for a, b in COMPARISONS:
        if a in rankers and b in rankers:
            diff = paired(aubc_by_seed(results, a), aubc_by_seed(results, b))
            if diff is not None:
                table.notes.append(f"AUBC {a} − {b}: {diff.cell()} points over {diff.n} seeds "
                                   f"({'CI excludes 0' if diff.excludes_zero else 'CI includes 0'}).")
    return table


def pixel_auc_by_map(results: Mapping[int, dict]) -> dict[str, list[float]]:
    """Per map, the seeds' pixel AUCs on cable borders (budget.json's `pixel_auc_border`)."""
    out: dict[str, list[float]] = {}
    for r in results.values():
        for name, value in r.get("pixel_auc_border", {}).items():
            out.setdefault(name, []).append(value)
    return out


def _interval(values: Sequence[float], digits: int) -> str:
    """The mean of the finite values, its 95% t interval and their count (undefined: none finite)."""
    mean, half = mean_interval(values)
    n = sum(math.isfinite(v) for v in values)
    if n == 0:
        return "undefined (n=0)"
    if not math.isfinite(half):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}] (n={n})"


def aubc_by_seed(results: Mapping[int, dict], ranker: str) -> dict[int, float]:
    return {seed: r["rankers"][ranker]["aubc"] for seed, r in results.items() if ranker in r["rankers"]}


REFERENCE = "softmax"
"""The ranker the figure's right panel subtracts: the best order that needs no explanation."""


def budget_figure(results: Mapping[int, dict], path: str | Path, title: str) -> Path:
    """Left: label IoU against budget, a line (mean over seeds) and a 95% t band per ranker.
    Right: each ranker minus `REFERENCE` on the same seed, mean and 95% t band: the paired view
    that the left panel's between-seed bands hide."""
    first = next(iter(results.values()))
    budgets = [100 * b for b in first["budgets"]]
    fig, (ax, diff) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    for name in first["rankers"]:
        curves = {seed: r["rankers"][name]["curve"] for seed, r in results.items() if name in r["rankers"]}
        bands = [mean_interval([c[i] for c in curves.values()]) for i in range(len(budgets))]
        (line,) = ax.plot(budgets, [m for m, _ in bands], marker="o", ms=3, label=name)
        _band(ax, budgets, bands, line.get_color())
        if name != REFERENCE and REFERENCE in first["rankers"]:
            paired_bands = [mean_interval([c[i] - results[seed]["rankers"][REFERENCE]["curve"][i]
                                           for seed, c in curves.items()]) for i in range(len(budgets))]
            diff.plot(budgets, [m for m, _ in paired_bands], marker="o", ms=3, color=line.get_color(), label=name)
            _band(diff, budgets, paired_bands, line.get_color())
    ax.set_ylabel(f"training-label {first['class_name']} IoU vs truth (%)")
    ax.set_title(title, fontsize=10)
    diff.axhline(0, color="black", lw=0.8)
    diff.set_ylabel(f"minus {REFERENCE} on the same seed (points)")
    diff.set_title(f"Paired difference to {REFERENCE}, mean and 95% t band", fontsize=10)
    for panel in (ax, diff):
        panel.set_xlabel("budget: share of proposals reviewed (%)")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8, loc="lower right" if panel is ax else "upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _band(panel, budgets: list[float], bands: list[tuple[float, float]], color) -> None:
    """The 95% t band around a line (none where a single seed gives no interval)."""
    if all(math.isfinite(h) for _, h in bands):
        panel.fill_between(budgets, [m - h for m, h in bands], [m + h for m, h in bands], color=color, alpha=0.15)
