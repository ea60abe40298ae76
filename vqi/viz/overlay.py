"""Class palette, coloured masks and image/mask overlays (numpy in, numpy out)."""
from __future__ import annotations

import numpy as np

from vqi.classes import CLASS_NAMES, IGNORE_INDEX, PERPLEXED

PALETTE: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),            # background
    1: (255, 40, 40),        # cable: red
    2: (40, 120, 255),       # tower_lattice: blue
    3: (255, 210, 0),        # tower_tucohy: yellow
    4: (40, 200, 70),        # tower_wooden: green (purple was too close to perplexed's magenta)
    PERPLEXED: (255, 0, 255),  # perplexed (augmented training sets only): magenta
    IGNORE_INDEX: (255, 255, 255),  # void / ignore: white
}
"""Class id -> RGB, the one palette of every figure, page and overlay. Ids not listed are grey."""

LEGEND_NAMES: dict[int, str] = {**dict(enumerate(CLASS_NAMES)), PERPLEXED: "perplexed",
                                IGNORE_INDEX: "void (ignored)"}
"""Class id -> the name a legend shows."""

UNKNOWN_COLOUR = (128, 128, 128)


def colorize(mask: np.ndarray) -> np.ndarray:
    """H x W class-index mask -> H x W x 3 uint8 RGB with `PALETTE`."""
    lut = np.tile(np.array(UNKNOWN_COLOUR, np.uint8), (256, 1))
    for cls, colour in PALETTE.items():
        lut[cls] = colour
    return lut[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask onto an RGB uint8 image; background pixels stay untouched."""
    image = np.asarray(image)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    out = image.astype(np.float32)
    fg = np.asarray(mask) != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colorize(mask)[fg].astype(np.float32)
    return out.round().astype(np.uint8)
