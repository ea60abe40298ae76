"""Annotation proposals for one image, from its labels and the model's prediction: what an
expert reviews, in the order a ranker gives (vqi.study.rankers), never filtered by a score.

Two kinds (the paper's expert-guided augmentation, made reviewable):
- `enlarge`: every thin-class instance with background around it is proposed to grow by k
  pixels (the ring it would gain at k); the expert accepts it at any k (k = 0 rejects it).
- `unlabelled`: a connected region the model predicts as a thin class, outside every labelled
  object; the expert chooses its label: the thin class (a missed annotation), `perplexed` (a
  look-alike the model confuses with it, the paper's perplexed object), or rejects it.

A proposal's `score` is the active ranker's (higher = review first); proposals carry no gate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vqi.augment import regions
from vqi.classes import BACKGROUND, IGNORE_INDEX
from vqi.data.rasterize import instance_mask

ENLARGE = "enlarge"
UNLABELLED = "unlabelled"
KINDS = (ENLARGE, UNLABELLED)
LEGACY_PERPLEXED_KIND = "perplexed"
"""The kind of unlabelled regions in review files written before the expert chose labels: they
were always proposed as `perplexed`."""
PERPLEXED = "perplexed"
"""The label of a look-alike (class id vqi.classes.PERPLEXED)."""
PENDING, ACCEPT, REJECT = "pending", "accept", "reject"
DECISIONS = (PENDING, ACCEPT, REJECT)
K_LIMIT = 50
"""The largest k a review file, an imported decision or a review request may hold, whatever
`augment.enlarge.k_max` says: k is a disc's radius dilated per proposal, and an absurd k costs
seconds to minutes per proposal (k = 2000: 20 s) or fails in OpenCV."""


@dataclass(frozen=True)
class EnlargeRule:
    k: int = 2
    """The ring proposed for review (the expert may accept any k in 0..k_max)."""
    k_max: int = 3
    """The largest k an expert may choose (the review page's and the oracle's range)."""

    def __post_init__(self):
        if not 1 <= self.k <= self.k_max <= K_LIMIT:
            raise ValueError(f"augment.enlarge: need 1 <= k <= k_max <= {K_LIMIT}, got k={self.k}, "
                             f"k_max={self.k_max}")


@dataclass(frozen=True)
class UnlabelledRule:
    min_area: int = 20
    margin: int = 3
    """Pixels this close to a ground-truth object are never proposed (annotation slack)."""


@dataclass
class Proposal:
    proposal_id: str
    image: str
    kind: str
    class_name: str
    """The thin class concerned: an enlargement's instance class, or the class the model predicts
    on an unlabelled region."""
    score: float
    region: str
    """COCO RLE counts of the proposed pixels (for `enlarge`: the ring at the proposed k)."""
    bbox: list[int]
    area: int
    annotation_id: int | None = None
    k: int | None = None
    decision: str = PENDING
    note: str = field(default="")
    decided_by: str = ""
    """Who set `decision`: "" (nobody yet), `policy:<name>` (pre-filled) or `expert`."""
    label: str = ""
    """The class the proposed pixels get when accepted: an enlargement's own class; for an
    unlabelled region the expert's choice among `label_choices` ("" until chosen)."""
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    """Every ranker's score computed in this run, by ranker name (not saved in the review file)."""


def label_choices(proposal: Proposal) -> tuple[str, ...]:
    """The labels an expert may give a proposal's pixels."""
    if proposal.kind == ENLARGE:
        return (proposal.class_name,)
    return (proposal.class_name, PERPLEXED)


def propose_enlargements(
    stem: str,
    label_mask: np.ndarray,
    instances: list[tuple[int, np.ndarray]],
    class_name: str,
    rule: EnlargeRule,
) -> list[Proposal]:
    """One proposal per instance `(annotation id, boolean mask)` with background around it."""
    out = []
    for annotation_id, instance in instances:
        ring = regions.enlargement(instance, label_mask, rule.k)
        if ring.any():
            out.append(Proposal(
                proposal_id=f"{stem}/enlarge/{annotation_id}", image=stem, kind=ENLARGE,
                class_name=class_name, score=0.0, region=regions.encode(ring), bbox=regions.bbox(ring),
                area=int(ring.sum()), annotation_id=annotation_id, k=rule.k, label=class_name,
            ))
    return out


def propose_unlabelled(
    stem: str,
    label_mask: np.ndarray,
    predicted: np.ndarray,
    class_name: str,
    rule: UnlabelledRule,
) -> list[Proposal]:
    """Regions predicted as the thin class (`predicted`, boolean) far from any labelled object."""
    labelled = (label_mask != BACKGROUND) & (label_mask != IGNORE_INDEX)
    allowed = (label_mask == BACKGROUND) & ~regions.dilate(labelled, rule.margin)
    return [Proposal(
        proposal_id=f"{stem}/unlabelled-{class_name}/{index}", image=stem, kind=UNLABELLED,
        class_name=class_name, score=0.0, region=regions.encode(part.mask), bbox=part.bbox, area=part.area,
    ) for index, part in enumerate(regions.components(predicted & allowed, rule.min_area))]


def propose_for_image(stem: str, annotations: list[dict], label_mask: np.ndarray, pred: np.ndarray,
                      class_ids: dict[str, int], thin_classes: list[str], enlarge: EnlargeRule,
                      unlabelled: UnlabelledRule) -> tuple[list[Proposal], dict[int, np.ndarray]]:
    """One image's proposals for every thin class, and the masks of its thin instances by
    annotation id (what the enlargements grow)."""
    found: list[Proposal] = []
    instances: dict[int, np.ndarray] = {}
    for name in thin_classes:
        cid = class_ids[name]
        mine = [(ann["id"], instance_mask(ann, *label_mask.shape)) for ann in annotations if ann["category_id"] == cid]
        instances.update(mine)
        found += propose_enlargements(stem, label_mask, mine, name, enlarge)
        found += propose_unlabelled(stem, label_mask, pred == cid, name, unlabelled)
    return found, instances
