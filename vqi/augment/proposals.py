"""Annotation proposals for one image, from its labels, the model's prediction and explanations.

Two kinds (the paper's expert-guided augmentation), and a control with no explanation:
- `enlarge`: a thin-class instance whose explanation spills around it is proposed to grow by k
  pixels into background. Its score is the explanation's mean on that k-pixel ring.
- `perplexed`: a connected region the model predicts as a thin class, or where that class's
  explanation is strong, lying outside every ground-truth instance (road markings, fences) is
  proposed as the class `perplexed`. Its score is the explanation's mean over the region.
- blind dilation (`propose_dilations`): every thin instance grown by k, score 1: the control
  that asks whether the explanation adds anything to simply widening every thin label.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vqi.augment import regions
from vqi.classes import BACKGROUND, IGNORE_INDEX

ENLARGE = "enlarge"
PERPLEXED = "perplexed"
PENDING, ACCEPT, REJECT = "pending", "accept", "reject"
DECISIONS = (PENDING, ACCEPT, REJECT)


@dataclass(frozen=True)
class EnlargeRule:
    k: int = 2
    min_ring_attention: float = 0.3


@dataclass(frozen=True)
class PerplexedRule:
    cam_threshold: float = 0.5
    min_area: int = 20
    margin: int = 3
    """Pixels this close to a ground-truth object are never proposed (annotation slack)."""


@dataclass
class Proposal:
    proposal_id: str
    image: str
    kind: str
    class_name: str
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


def propose_enlargements(
    stem: str,
    label_mask: np.ndarray,
    instances: list[tuple[int, np.ndarray]],
    cam: np.ndarray,
    class_name: str,
    rule: EnlargeRule,
) -> list[Proposal]:
    """One proposal per instance `(annotation id, boolean mask)` whose ring attention passes."""
    out = []
    for annotation_id, instance in instances:
        ring = regions.enlargement(instance, label_mask, rule.k)
        if not ring.any():
            continue
        score = float(cam[ring].mean())
        if score < rule.min_ring_attention:
            continue
        out.append(Proposal(
            proposal_id=f"{stem}/enlarge/{annotation_id}", image=stem, kind=ENLARGE,
            class_name=class_name, score=round(score, 4), region=regions.encode(ring),
            bbox=regions.bbox(ring), area=int(ring.sum()), annotation_id=annotation_id, k=rule.k,
        ))
    return out


def propose_dilations(
    stem: str,
    label_mask: np.ndarray,
    instances: list[tuple[int, np.ndarray]],
    class_name: str,
    k: int,
) -> list[Proposal]:
    """One enlargement proposal per instance with a non-empty k-pixel ring, whatever the model says."""
    out = []
    for annotation_id, instance in instances:
        ring = regions.enlargement(instance, label_mask, k)
        if ring.any():
            out.append(Proposal(
                proposal_id=f"{stem}/enlarge/{annotation_id}", image=stem, kind=ENLARGE,
                class_name=class_name, score=1.0, region=regions.encode(ring),
                bbox=regions.bbox(ring), area=int(ring.sum()), annotation_id=annotation_id, k=k,
            ))
    return out


def explained_class(proposal: Proposal) -> str:
    """The thin class whose explanation gave the proposal: an enlargement's own class, or the
    source class that a perplexed proposal's id names (`<image>/perplexed-<class>/<n>`)."""
    if proposal.kind == PERPLEXED:
        return proposal.proposal_id.split("/")[-2].removeprefix("perplexed-")
    return proposal.class_name


def propose_perplexed(
    stem: str,
    label_mask: np.ndarray,
    predicted: np.ndarray,
    cam: np.ndarray | None,
    source_class: str,
    rule: PerplexedRule,
) -> list[Proposal]:
    """Regions predicted (or strongly explained) as the thin class but far from any labelled object.

    `predicted` is the boolean prediction of the thin class; `cam` its explanation (None when
    the class has no predicted pixels, so nothing to explain).
    """
    suspicious = predicted.copy()
    if cam is not None:
        suspicious |= cam >= rule.cam_threshold
    labelled = (label_mask != BACKGROUND) & (label_mask != IGNORE_INDEX)
    allowed = (label_mask == BACKGROUND) & ~regions.dilate(labelled, rule.margin)
    out = []
    for index, part in enumerate(regions.components(suspicious & allowed, rule.min_area)):
        score = float(part.values(cam).mean()) if cam is not None else 0.0
        out.append(Proposal(
            proposal_id=f"{stem}/perplexed-{source_class}/{index}", image=stem, kind=PERPLEXED,
            class_name=PERPLEXED, score=round(score, 4), region=regions.encode(part.mask),
            bbox=part.bbox, area=part.area,
        ))
    return out
