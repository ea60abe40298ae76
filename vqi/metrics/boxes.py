"""B_c: the union of the axis-aligned boxes of class c's ground-truth instances, as a pixel mask.

A COCO box [x, y, w, h] covers the pixels whose centres it contains (pixel (r, q) has its centre
at (q + 0.5, r + 0.5)): columns round(x) .. round(x + w) - 1, rows likewise, clipped to the image
(at least one pixel when w, h > 0).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def box_masks(annotations: Iterable[dict], height: int, width: int,
              classes: Iterable[int]) -> dict[int, np.ndarray]:
    """{class id: H x W bool union of its boxes} for `classes` (others, e.g. void 255, ignored)."""
    out = {int(c): np.zeros((height, width), dtype=bool) for c in classes}
    for ann in annotations:
        c = int(ann["category_id"])
        if c not in out:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0 or x + w <= 0 or y + h <= 0 or x >= width or y >= height:
            continue  # empty, or wholly outside the image
        x0, y0 = min(int(np.floor(x + 0.5)), width - 1), min(int(np.floor(y + 0.5)), height - 1)
        x1, y1 = max(int(np.floor(x + w + 0.5)), x0 + 1), max(int(np.floor(y + h + 0.5)), y0 + 1)
        out[c][max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)] = True
    return out
