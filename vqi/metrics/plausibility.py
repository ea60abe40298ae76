"""Plausibility: how well a map L_c in [0, 1] agrees with the human annotation (in %).

All functions take U maps at once: `maps` U x H x W float, `boxes`/`gt` U x H x W bool
(B_c, the union of class c's ground-truth boxes; G_c, its ground-truth mask).
"""
from __future__ import annotations

import numpy as np


def ebpg(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Energy-based pointing game: share of the map's energy inside B_c. An all-zero map scores 0."""
    total = maps.sum(axis=(1, 2), dtype=np.float64)
    inside = (maps * boxes).sum(axis=(1, 2), dtype=np.float64)
    return 100.0 * np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def iou(maps: np.ndarray, gt: np.ndarray, tau: float = 0.5) -> np.ndarray:
    """IoU of the thresholded map {L_c >= tau} with G_c (0 when both are empty)."""
    hot = maps >= tau
    inter = (hot & gt).sum(axis=(1, 2))
    union = (hot | gt).sum(axis=(1, 2))
    return 100.0 * np.divide(inter, union, out=np.zeros(len(maps)), where=union > 0)


def bbox(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of B_c among the N = |B_c| highest pixels of L_c (ties: stable sort, pixel order)."""
    out = np.zeros(len(maps))
    for u, (cam, box) in enumerate(zip(maps, boxes)):
        n = int(box.sum())
        if n == 0:
            raise ValueError(f"bbox: unit {u} has an empty box region B_c")
        top = np.argsort(-cam.ravel(), kind="stable")[:n]
        out[u] = 100.0 * box.ravel()[top].sum() / n
    return out
