"""Pixel regions: dilation rings, connected components and their compact RLE form."""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def encode(region: np.ndarray) -> str:
    """A boolean H×W region as COCO compressed RLE counts (a short printable string)."""
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def decode(counts: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def bbox(region: np.ndarray) -> list[int]:
    """[x, y, w, h] of a non-empty region (COCO order)."""
    ys, xs = np.nonzero(region)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def dilate(region: np.ndarray, k: int) -> np.ndarray:
    """Grow a region by k pixels (a disc of radius k), so thin objects widen evenly."""
    if k <= 0:
        return region.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def enlargement(instance: np.ndarray, label_mask: np.ndarray, k: int, background: int = 0) -> np.ndarray:
    """The pixels an instance gains when grown by k: only background, never another class or ignore."""
    return dilate(instance, k) & ~instance & (label_mask == background)


def components(region: np.ndarray, min_area: int) -> list[np.ndarray]:
    """The 8-connected components of a region with at least `min_area` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]


def rle_segmentation(region: np.ndarray) -> dict:
    """A boolean region as a JSON-ready COCO RLE segmentation."""
    return {"size": [int(region.shape[0]), int(region.shape[1])], "counts": encode(region)}
