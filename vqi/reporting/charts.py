"""Charts: training curves, the confusion matrix, Table I as bars, sanity and deletion /
insertion lines. Each has a title and a legend or colour bar wherever a colour means something.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

from vqi.classes import CLASS_NAMES  # noqa: E402
from vqi.reporting.figures import save_figure  # noqa: E402
from vqi.viz.overlay import PALETTE  # noqa: E402

CHART_DPI = 150
BEST, OTHER = "#08519c", "#9ecae1"


def save_lines_figure(path: str | Path, x_labels: Sequence[str], lines: dict[str, Sequence[float]],
                      ylabel: str, title: str, hline: float | None = None) -> Path:
    """One line per name over categorical steps (NaN = undefined, left as a gap); written atomically."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(x_labels) + 2), 3.8), layout="constrained")
    for name, values in lines.items():
        ax.plot(range(len(values)), np.asarray(values, dtype=float), marker="o", ms=3, label=name)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(x_labels)))
    ax.set_xticklabels(x_labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    return save_figure(fig, path, CHART_DPI)


def save_curves_figure(path: str | Path, curves: dict[str, dict[str, Sequence[float]]], title: str) -> Path:
    """Deletion | insertion panels, conf_c / conf_c(x) against the share of pixels changed, one
    line per method (`{method: {"deletion": [...], "insertion": [...]}}`); written atomically."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True, layout="constrained")
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for name, kinds in curves.items():
            if kinds.get(kind):
                values = np.asarray(kinds[kind], dtype=float)
                ax.plot(np.linspace(0, 1, len(values)), values, label=name)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=10)
        ax.set_xlabel("share of pixels " + ("blurred" if kind == "deletion" else "restored"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("conf_c / conf_c(x)")
    low, high = axes[0].get_ylim()
    axes[0].set_ylim(min(low, 0.0), max(high, 1.05))  # the whole 0..1 range: flat curves look flat
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path, CHART_DPI)


def save_training_curves(path: str | Path, loss: Mapping[int, float], val_iou: Mapping[str, Mapping[int, float]],
                         title: str) -> Path:
    """Training loss per epoch | validation IoU per epoch, one line per `val_iou` name ("Overall"
    in black, classes in their palette colour); epoch 0 is the untrained model. Written atomically."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    epochs = sorted(loss)
    axes[0].plot(epochs, [loss[e] for e in epochs], marker="o", ms=3, color="black", label="training loss")
    axes[0].set_title("training loss (mean over the epoch's batches)", fontsize=10)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    colours = {name: np.array(PALETTE[i]) / 255 for i, name in enumerate(CLASS_NAMES)}
    for name, values in val_iou.items():
        steps = sorted(values)
        axes[1].plot(steps, [100 * values[s] for s in steps], marker="o", ms=3, label=name,
                     color=colours.get(name, "black"), lw=2.4 if name == "Overall" else 1.3)
    axes[1].set_title("validation IoU (%), epoch 0 = untrained" if val_iou else "validation IoU: no val split",
                      fontsize=10)
    axes[1].set_ylabel("IoU (%)")
    if val_iou:
        axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path, CHART_DPI)


def save_confusion_figure(path: str | Path, mat: np.ndarray, names: Sequence[str], title: str) -> Path:
    """Row-normalised confusion matrix (rows: ground truth) with share and pixel count per cell
    (10 pt) and a colour bar; written atomically."""
    mat = np.asarray(mat, dtype=np.float64)
    rows = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    size = max(6.5, 1.25 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=10)
    ax.set_yticks(range(len(names)), names, fontsize=10)
    ax.set_xlabel("prediction", fontsize=11)
    ax.set_ylabel("ground truth", fontsize=11)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n{int(mat[i, j]):,} px", ha="center", va="center", fontsize=10,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="share of the ground-truth row")
    ax.set_title(title, fontsize=11)
    return save_figure(fig, path, CHART_DPI)


def save_table_chart(path: str | Path, methods: Sequence[str], columns: Sequence[tuple[str, str, bool, int]],
                     values: Mapping[str, Mapping[str, float]], best: Mapping[str, set[str]], title: str) -> Path:
    """A table as bars: one panel per column `(key, label with ↑/↓, ranked, digits)`, one bar per
    method (`values[method][key]`, written with the table's digits; NaN or missing = no bar); the
    methods in `best[key]` (the table's bold) are dark. Written atomically."""
    cols = min(3, len(columns))
    rows = -(-len(columns) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, (0.3 * len(methods) + 1.4) * rows + 0.8),
                             squeeze=False, layout="constrained")
    y = np.arange(len(methods))
    for ax, (key, label, ranked, digits) in zip(axes.flat, columns):
        data = np.array([values.get(m, {}).get(key, np.nan) for m in methods], dtype=float)
        colours = [BEST if m in best.get(key, ()) else OTHER for m in methods]
        ax.barh(y, np.nan_to_num(data), color=colours)
        for yi, v in zip(y, data):
            ax.text(v if np.isfinite(v) else 0, yi, f" {v:.{digits}f}" if np.isfinite(v) else " –", va="center",
                    fontsize=9)
        ax.set_yticks(y, methods, fontsize=9)
        ax.invert_yaxis()
        ax.set_title(label + ("" if ranked else " (not ranked)"), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
        if round(float(np.max(np.abs(np.nan_to_num(data)), initial=0)), digits) == 0:
            ax.set_xlim(0, 1)  # every value shows as 0: a plain axis, not one scaled to rounding noise
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=BEST), plt.Rectangle((0, 0), 1, 1, color=OTHER)]
    fig.legend(handles, ["best of the column (bold in the table)", "other methods"], loc="outside lower center",
               ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path, CHART_DPI)
