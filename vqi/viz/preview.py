"""Preview grids: one row per image, `image | mask overlay`, saved as PNG with matplotlib (Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vqi.classes import CLASS_NAMES, IGNORE_INDEX  # noqa: E402
from vqi.viz.overlay import PALETTE, overlay  # noqa: E402


def save_preview(path: str | Path, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 titles: Sequence[str], alpha: float = 0.6) -> Path:
    """Write a grid of `image | overlay` rows with a class legend; returns the path."""
    if not images:
        raise ValueError("save_preview: no images given")
    rows = len(images)
    fig, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows), squeeze=False)
    for row, (image, mask, title) in enumerate(zip(images, masks, titles)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(title, fontsize=8)
        axes[row, 1].imshow(overlay(image, mask, alpha))
        axes[row, 1].set_title("mask overlay", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    names = {**dict(enumerate(CLASS_NAMES[1:], start=1)), IGNORE_INDEX: "ignore"}
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=np.array(PALETTE[i]) / 255, edgecolor="black") for i in names]
    fig.legend(handles, list(names.values()), loc="lower center", ncol=len(names), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
