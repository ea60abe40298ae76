"""The class legend of mask overlays: one coloured patch per class id, from `overlay.PALETTE`."""
from __future__ import annotations

from typing import Iterable

import matplotlib

matplotlib.use("Agg")
from matplotlib.patches import Patch  # noqa: E402

from vqi.classes import BACKGROUND, FOREGROUND_IDS, IGNORE_INDEX, PERPLEXED  # noqa: E402
from vqi.viz.overlay import LEGEND_NAMES, PALETTE  # noqa: E402

DEFAULT_IDS = (*FOREGROUND_IDS, IGNORE_INDEX)
"""The classes an annotated (not augmented) split can hold, background left out (drawn as is)."""

REVIEW_IDS = (*FOREGROUND_IDS, PERPLEXED, IGNORE_INDEX)
"""The classes a review tile can show: an augmented split adds `perplexed`."""


def css_swatches(ids: Iterable[int] = REVIEW_IDS) -> list[tuple[str, str]]:
    """(legend name, CSS colour `#rrggbb`) per class of `ids`, background left out: the HTML
    pages' legends, from the same palette as the tiles."""
    return [(LEGEND_NAMES[i], "#%02x%02x%02x" % PALETTE[i]) for i in ids if i != BACKGROUND]


def class_handles(ids: Iterable[int] = DEFAULT_IDS) -> list[Patch]:
    """Legend patches for `ids` (background is the image itself, so it has none)."""
    return [Patch(facecolor=[c / 255 for c in PALETTE[i]], edgecolor="black", label=LEGEND_NAMES[i])
            for i in ids if i != 0]


def add_class_legend(fig, ids: Iterable[int] = DEFAULT_IDS, fontsize: float = 9) -> None:
    """One row of class patches under the figure's panels."""
    handles = class_handles(ids)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=fontsize,
               frameon=False)
