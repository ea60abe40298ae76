"""CAM figures as in the paper's Fig. 3: image | ground truth | prediction | one map per panel."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vqi.utils.atomic import atomic_path  # noqa: E402
from vqi.viz.overlay import overlay  # noqa: E402


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """A normalised 3 x H x W input tensor back to H x W x 3 uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255).round().astype(np.uint8)


def heat(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map in the jet colormap blended onto the image (uint8 RGB)."""
    colours = plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3]
    return ((1 - alpha) * rgb / 255.0 + alpha * colours).clip(0, 1)


def _save(fig, path: str | Path, dpi: int) -> Path:
    """Lay out, write atomically as PNG, close; returns the path."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def save_cam_figure(path: str | Path, rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                    maps: Sequence[tuple[str, np.ndarray]], title: str = "") -> Path:
    """One row: image, ground truth, prediction, then each `(label, map)`; written atomically."""
    panels = [("image", rgb), ("ground truth", overlay(rgb, gt.astype(np.uint8))),
              ("prediction", overlay(rgb, pred.astype(np.uint8)))]
    panels += [(label, heat(rgb, cam)) for label, cam in maps]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (label, panel) in zip(axes[0], panels):
        ax.imshow(panel)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=90)


def save_lines_figure(path: str | Path, x_labels: Sequence[str], lines: dict[str, Sequence[float]],
                      ylabel: str, title: str = "", hline: float | None = None) -> Path:
    """One line per name over categorical steps (NaN = undefined, left as a gap); written atomically."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(x_labels) + 2), 3.6))
    for name, values in lines.items():
        ax.plot(range(len(values)), np.asarray(values, dtype=float), marker="o", ms=3, label=name)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(x_labels)))
    ax.set_xticklabels(x_labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi=100)


def save_curves_figure(path: str | Path, curves: dict[str, dict[str, Sequence[float]]], title: str = "") -> Path:
    """Deletion | insertion panels, conf_c / conf_c(x) against the share of pixels changed, one
    line per method (`{method: {"deletion": [...], "insertion": [...]}}`); written atomically."""
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for name, kinds in curves.items():
            if kinds.get(kind):
                values = np.asarray(kinds[kind], dtype=float)
                ax.plot(np.linspace(0, 1, len(values)), values, label=name)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        ax.set_xlabel("share of pixels " + ("blurred" if kind == "deletion" else "restored"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("conf_c / conf_c(x)")
    axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=100)
