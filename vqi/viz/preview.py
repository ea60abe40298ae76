"""Preview grids: one row per image, `image | mask overlay`, saved as PNG with matplotlib (Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vqi.utils.atomic import atomic_path  # noqa: E402
from vqi.viz.legend import add_class_legend  # noqa: E402
from vqi.viz.overlay import overlay  # noqa: E402


def save_preview(path: str | Path, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 titles: Sequence[str], alpha: float = 0.6,
                 title: str = "Prepared images and their class masks") -> Path:
    """Write a titled grid of `image | overlay` rows with a class legend; returns the path."""
    if not images:
        raise ValueError("save_preview: no images given")
    rows = len(images)
    fig, axes = plt.subplots(rows, 2, figsize=(6.6, 3.2 * rows + 0.8), squeeze=False, layout="constrained")
    for row, (image, mask, name) in enumerate(zip(images, masks, titles)):
        axes[row, 0].imshow(image, interpolation="nearest")
        axes[row, 0].set_title(name, fontsize=9)
        axes[row, 1].imshow(overlay(image, mask, alpha), interpolation="nearest")
        axes[row, 1].set_title("mask overlay", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=11)
    add_class_legend(fig, fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
