"""Pixel regions: dilation rings, connected components and their compact RLE form."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def encode(region: np.ndarray) -> str:
    """A boolean H×W region as COCO compressed RLE counts (a short printable string)."""
    if region.dtype == bool:
        region = region.view(np.uint8)   # no copy; neither below for a column-major region
    rle = mask_utils.encode(np.asfortranarray(region, dtype=np.uint8))
    return rle["counts"].decode("ascii")


def decode(counts: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def union(counts: list[str], height: int, width: int) -> np.ndarray:
    """The union of several regions' RLE counts, merged as RLE and decoded once."""
    rles = [{"size": [height, width], "counts": c.encode("ascii")} for c in counts]
    return mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(bool)


def bbox(region: np.ndarray) -> list[int]:
    """[x, y, w, h] of a non-empty region (COCO order), from its occupied rows and columns."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def dilate(region: np.ndarray, k: int) -> np.ndarray:
    """Grow a region by k pixels (a disc of radius k), so thin objects widen evenly."""
    if k <= 0:
        return region.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def enlargement(instance: np.ndarray, label_mask: np.ndarray, k: int, background: int = 0) -> np.ndarray:
    """The pixels an instance gains when grown by k: only background, never another class or ignore."""
    return dilate(instance, k) & ~instance & (label_mask == background)


@dataclass(frozen=True)
class Component:
    """One connected component: its H x W mask, COCO [x, y, w, h] box, pixel count and the mask
    inside its box."""

    mask: np.ndarray
    bbox: list[int]
    area: int
    inside: np.ndarray
    """The mask inside the box only (h x w, row-major)."""

    def values(self, image: np.ndarray) -> np.ndarray:
        """`image[mask]` (the same values in the same order), read inside the box only."""
        x, y, w, h = self.bbox
        return image[y:y + h, x:x + w][self.inside]


def components(region: np.ndarray, min_area: int) -> list[Component]:
    """The 8-connected components of a region with at least `min_area` pixels; each mask is
    drawn inside its box only (a full-image comparison per component grows with image size x
    component count)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i, :5])   # left, top, width, height, area
        if area >= min_area:
            inside = labels[y:y + h, x:x + w] == i
            mask = np.zeros(region.shape, bool, order="F")   # column-major: `encode` copies nothing
            mask[y:y + h, x:x + w] = inside
            out.append(Component(mask, [x, y, w, h], area, inside))
    return out


def rle_segmentation(region: np.ndarray) -> dict:
    """A boolean region as a JSON-ready COCO RLE segmentation."""
    return {"size": [int(region.shape[0]), int(region.shape[1])], "counts": encode(region)}
