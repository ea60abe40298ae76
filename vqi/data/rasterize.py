"""Class masks from COCO annotations, with pycocotools' polygon rule.

pycocotools, not PIL's polygon fill: for thin objects the two disagree a lot (on real TTPLA
images PIL's cable masks have IoU 0.54-0.89 with pycocotools'), and every COCO tool the field
uses rasterises with pycocotools.

Overlap rule (pixels claimed by two instances): instances are painted largest area first, so
the smaller instance wins where two overlap (a thin cable in front of a tower stays cable);
ties keep annotation order, the later one winning. Void (category 255) is painted after every
class, so a pixel that any void shape claims is ignored.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from vqi.classes import BACKGROUND, IGNORE_INDEX


def instance_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """One annotation's pixels (bool H x W): polygon list or RLE, as pycocotools decodes it."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def rasterize(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """A uint8 class-index mask (0 background, 255 ignore) from one image's annotations."""
    masks = [instance_mask(ann, height, width) for ann in annotations]
    order = sorted(range(len(annotations)), key=lambda i: (
        annotations[i]["category_id"] == IGNORE_INDEX, -int(masks[i].sum()), i))
    out = np.full((height, width), BACKGROUND, dtype=np.uint8)
    for i in order:
        out[masks[i]] = annotations[i]["category_id"]
    return out
