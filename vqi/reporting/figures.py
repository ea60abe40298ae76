"""Image-panel figures: CAM maps (the paper's Fig. 3), test overlays, and the original vs
enhanced model (the paper's Fig. 6). Each has a title, a class legend for its overlays and a
colour bar for its maps; panels are at least `PANEL_PX` pixels wide.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vqi.utils.atomic import atomic_path  # noqa: E402
from vqi.classes import PERPLEXED  # noqa: E402
from vqi.viz.legend import DEFAULT_IDS, add_class_legend  # noqa: E402
from vqi.viz.overlay import overlay  # noqa: E402

CAM_COLORMAP = "jet"
PANEL_INCHES = 3.0
DPI = 110
PANEL_PX = 300
"""Each image panel is at least this many pixels wide (3 inches at 110 dpi, less margins)."""


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """A normalised 3 x H x W input tensor back to H x W x 3 uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255).round().astype(np.uint8)


def heat(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map in `CAM_COLORMAP` blended onto the image (float RGB in [0, 1])."""
    colours = plt.get_cmap(CAM_COLORMAP)(np.clip(cam, 0, 1))[..., :3]
    return ((1 - alpha) * rgb / 255.0 + alpha * colours).clip(0, 1)


def save_figure(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Write atomically as PNG (the figure's own layout engine places everything), close; the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def _grid(rows: int, cols: int, title: str, extra_height: float = 0.9):
    """A constrained-layout grid of image panels (so titles, legends and colour bars never overlap)."""
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols + 0.6, PANEL_INCHES * rows + extra_height),
                             squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=12)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _cam_colorbar(fig, axes) -> None:
    fig.colorbar(ScalarMappable(Normalize(0, 1), CAM_COLORMAP), ax=axes, shrink=0.8, pad=0.01,
                 label="CAM value (normalised per map)")


def save_cam_figure(path: str | Path, rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                    maps: Sequence[tuple[str, np.ndarray]], title: str, method: str = "") -> Path:
    """One row: image, ground truth, prediction, then each `(class name, map)`; a class legend
    for the overlays and a colour bar for the maps; written atomically."""
    panels = [("image", rgb), ("ground truth", overlay(rgb, gt.astype(np.uint8))),
              ("prediction", overlay(rgb, pred.astype(np.uint8)))]
    panels += [(f"{method}: {name}" if method else name, heat(rgb, cam)) for name, cam in maps]
    fig, axes = _grid(1, len(panels), title)
    for ax, (label, panel) in zip(axes[0], panels):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(label, fontsize=10)
    if maps:
        _cam_colorbar(fig, axes[0, 3:].tolist())
    add_class_legend(fig)
    return save_figure(fig, path)


def save_overlay_figure(path: str | Path, rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str) -> Path:
    """Image | ground truth | prediction, with the class legend; written atomically."""
    fig, axes = _grid(1, 3, title)
    for ax, (label, panel) in zip(axes[0], [("image", rgb), ("ground truth", overlay(rgb, gt.astype(np.uint8))),
                                             ("prediction", overlay(rgb, pred.astype(np.uint8)))]):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(label, fontsize=10)
    add_class_legend(fig)
    return save_figure(fig, path)


def save_methods_figure(path: str | Path, rows: Sequence[dict], title: str) -> Path:
    """The paper's Fig. 3: per row one image and one class, `image | ground truth | each method's
    map`. A row is `{"label": str, "rgb": HxWx3, "gt": HxW, "maps": [(method, HxW map)]}`."""
    if not rows:
        raise ValueError("save_methods_figure: no rows")
    cols = 2 + max(len(r["maps"]) for r in rows)
    fig, axes = _grid(len(rows), cols, title)
    for row, ax_row in zip(rows, axes):
        ax_row[0].imshow(row["rgb"], interpolation="nearest")
        ax_row[0].set_title("image", fontsize=10)
        ax_row[0].set_ylabel(row["label"], fontsize=10)
        ax_row[1].imshow(overlay(row["rgb"], row["gt"].astype(np.uint8)), interpolation="nearest")
        ax_row[1].set_title("ground truth", fontsize=10)
        for ax, (method, cam) in zip(ax_row[2:], row["maps"]):
            ax.imshow(heat(row["rgb"], cam), interpolation="nearest")
            ax.set_title(method, fontsize=10)
        for ax in ax_row[2 + len(row["maps"]):]:
            ax.axis("off")
    _cam_colorbar(fig, axes[:, 2:].ravel().tolist())
    add_class_legend(fig)
    return save_figure(fig, path)


def save_before_after_figure(path: str | Path, rows: Sequence[dict], title: str) -> Path:
    """The paper's Fig. 6: per row `image | annotation | original prediction | enhanced
    prediction`. A row is `{"label", "rgb", "gt", "original", "enhanced"}` plus optional
    `"original_note"` / `"enhanced_note"` (e.g. the image's IoU) shown in the panel titles."""
    if not rows:
        raise ValueError("save_before_after_figure: no rows")
    fig, axes = _grid(len(rows), 4, title)
    for row, ax_row in zip(rows, axes):
        panels = [("image", row["rgb"]), ("annotation", overlay(row["rgb"], row["gt"].astype(np.uint8))),
                  ("original model" + row.get("original_note", ""), overlay(row["rgb"], row["original"].astype(np.uint8))),
                  ("enhanced model" + row.get("enhanced_note", ""), overlay(row["rgb"], row["enhanced"].astype(np.uint8)))]
        for ax, (label, panel) in zip(ax_row, panels):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(label, fontsize=10)
        ax_row[0].set_ylabel(row["label"], fontsize=10)
    add_class_legend(fig, (*DEFAULT_IDS, PERPLEXED))  # the enhanced model learnt `perplexed` too
    return save_figure(fig, path)
