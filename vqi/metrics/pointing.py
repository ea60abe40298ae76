"""Pointing game (Zhang et al. 2016) adapted to thin objects (docs/metrics.md): a hit
when the map's maximum lies within `radius` px (Euclidean) of the ground truth G_c. A one-pixel
miss on a 3-px cable is still a hit; ties for the maximum: the first pixel in raster order.
"""
from __future__ import annotations

import numpy as np


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum; the first in raster order on a tie."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(cam)), cam.shape))


def hits(maps: np.ndarray, gt: np.ndarray, radius: float = 3.0) -> np.ndarray:
    """Per unit 100 * [peak of L_c within `radius` px of G_c]: `maps` U x H x W, `gt` U x H x W bool."""
    if radius < 0:
        raise ValueError(f"metrics pointing radius must be >= 0, got {radius}")
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = dy ** 2 + dx ** 2 <= radius ** 2
    out = np.zeros(len(maps))
    for u, (cam, g) in enumerate(zip(maps, gt)):
        i, j = peak(cam)
        padded = np.pad(g, r)          # the window around (i, j) in original coordinates
        out[u] = 100.0 * bool((padded[i:i + 2 * r + 1, j:j + 2 * r + 1] & disk).any())
    return out
