"""Applying accepted proposals: a new COCO dict and new masks; the originals are left untouched."""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import ACCEPT, ENLARGE, PERPLEXED, Proposal
from vqi.classes import BACKGROUND, CLASS_IDS
from vqi.classes import PERPLEXED as PERPLEXED_ID
from vqi.data.rasterize import instance_mask

LABEL_IDS = {**CLASS_IDS, PERPLEXED: PERPLEXED_ID}
"""The class id an accepted unlabelled region's label gives its pixels."""


@dataclass
class ApplySummary:
    """What changed, per class name: instances enlarged or added, and pixels changed."""
    instances: Counter = field(default_factory=Counter)
    pixels: Counter = field(default_factory=Counter)
    accepted: int = 0
    rejected: int = 0
    pending: int = 0

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": self.rejected, "pending": self.pending,
                "instances_changed": dict(self.instances), "pixels_changed": dict(self.pixels)}


def apply_to_image(
    label_mask: np.ndarray,
    annotations: dict[int, dict],
    accepted: list[Proposal],
    class_names: dict[int, str],
) -> tuple[np.ndarray, list[dict], list[np.ndarray], ApplySummary]:
    """Apply one image's accepted proposals.

    Returns the new label mask, the enlarged annotations (copies with RLE segmentation), the
    new objects as (class id, region) of accepted unlabelled regions, and what changed. Enlargements are computed against the
    original mask at the reviewed k, so they only ever take background pixels.
    """
    height, width = label_mask.shape
    new_mask = label_mask.copy()
    enlarged, new_regions, summary = [], [], ApplySummary()
    for proposal in sorted(accepted, key=lambda p: p.kind != ENLARGE):
        if proposal.kind == ENLARGE:
            annotation = annotations.get(proposal.annotation_id)
            if annotation is None:
                raise KeyError(f"proposal {proposal.proposal_id}: annotation {proposal.annotation_id} "
                               f"is not in image {proposal.image}")
            instance = instance_mask(annotation, height, width)
            gain = regions.enlargement(instance, label_mask, proposal.k) & (new_mask == BACKGROUND)
            class_id = annotation["category_id"]
            new_mask[gain] = class_id
            grown = instance | gain
            updated = copy.deepcopy(annotation)
            updated.update(segmentation=regions.rle_segmentation(grown), area=int(grown.sum()),
                           bbox=regions.bbox(grown))
            enlarged.append(updated)
            name = class_names[class_id]
        else:
            if proposal.label not in LABEL_IDS:
                raise ValueError(f"proposal {proposal.proposal_id}: accepted without a label (got "
                                 f"{proposal.label!r}); choose {proposal.class_name} or {PERPLEXED}")
            region = regions.decode(proposal.region, height, width) & (new_mask == BACKGROUND)
            if not region.any():
                continue
            new_mask[region] = LABEL_IDS[proposal.label]
            new_regions.append((LABEL_IDS[proposal.label], region))
            gain, name = region, proposal.label
        summary.instances[name] += 1
        summary.pixels[name] += int(gain.sum())
    return new_mask, enlarged, new_regions, summary


def augmented_coco(
    coco: dict,
    enlarged: list[dict],
    new_regions: dict[int, list[tuple[int, np.ndarray]]],
) -> dict:
    """A new COCO dict: enlarged annotations replaced, new objects added (a missed thin object as
    its class, a look-alike as `perplexed`, class 5, which the retrained model learns)."""
    out = copy.deepcopy(coco)
    by_id = {a["id"]: a for a in enlarged}
    out["annotations"] = [by_id.get(a["id"], a) for a in out["annotations"]]
    next_id = max((a["id"] for a in out["annotations"]), default=0) + 1
    for image_id, image_regions in sorted(new_regions.items()):
        for class_id, region in image_regions:
            out["annotations"].append({
                "id": next_id, "image_id": image_id, "category_id": class_id, "iscrowd": 0,
                "segmentation": regions.rle_segmentation(region), "area": int(region.sum()),
                "bbox": regions.bbox(region),
            })
            next_id += 1
    if all(c["id"] != PERPLEXED_ID for c in out["categories"]):
        out["categories"].append({"id": PERPLEXED_ID, "name": PERPLEXED, "supercategory": "distractor"})
    return out


def split_decisions(proposals: list[Proposal]) -> tuple[list[Proposal], ApplySummary]:
    summary = ApplySummary()
    accepted = []
    for p in proposals:
        if p.decision == ACCEPT:
            accepted.append(p)
            summary.accepted += 1
        elif p.decision == "reject":
            summary.rejected += 1
        else:
            summary.pending += 1
    return accepted, summary
