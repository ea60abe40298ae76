"""Rankers: the order in which an expert with limited time reviews proposals.

A ranker scores each proposal of one image from that image's `Evidence` (higher = review first);
`review_order` sorts a split's proposals by score, ties by proposal id. A ranker is one small
module here and one `conf/ranker/<name>.yaml` naming its class; `needs` says which evidence the
per-image pass must compute for it (maps cost a backward pass, LOTS maps one per step,
probabilities a forward pass).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import Proposal

CAM, CAM_FINE, LOTS, PROBS = "cam", "cam_fine", "lots", "probs"
EVIDENCE = (CAM, CAM_FINE, LOTS, PROBS)


@dataclass
class Evidence:
    """What one image offers a ranker: its annotated mask, and as the rankers need them the
    model's class probabilities (C x H x W), and per thin class the chosen method's map at the
    usual layer (`cams`) and at a finer one (`fine_cams`) and the LOTS map (`lots`, xai=lots);
    None where a class is not predicted."""
    label: np.ndarray
    class_ids: dict[str, int]
    probs: np.ndarray | None = None
    cams: dict[str, np.ndarray | None] = field(default_factory=dict)
    fine_cams: dict[str, np.ndarray | None] = field(default_factory=dict)
    instances: dict[int, np.ndarray] = field(default_factory=dict)
    """Annotation id -> its boolean instance mask (the enlargements' instances)."""
    lots: dict[str, np.ndarray | None] = field(default_factory=dict)

    def region(self, proposal: Proposal) -> np.ndarray:
        return regions.decode(proposal.region, *self.label.shape)


class Ranker:
    """Scores proposals; subclasses set `name`, `needs` and `score`."""

    name = "ranker"
    needs: frozenset[str] = frozenset()

    def score(self, proposal: Proposal, region: np.ndarray, evidence: Evidence) -> float:
        raise NotImplementedError

    def scores(self, proposals: list[Proposal], evidence: Evidence) -> list[float]:
        """One image's proposals' scores (NaN, e.g. a map of a class not predicted, ranks last)."""
        return [float(self.score(p, evidence.region(p), evidence)) for p in proposals]


def mean_over(values: np.ndarray | None, region: np.ndarray) -> float:
    """The mean of `values` over a region's pixels; NaN when there are no values or no pixels."""
    if values is None or not region.any():
        return float("nan")
    return float(values[region].mean())


def review_order(proposal_ids: list[str], scores: list[float]) -> list[int]:
    """Indices of the proposals in review order: highest score first, NaN last, ties by id."""
    key = lambda i: (np.isnan(scores[i]), -scores[i] if not np.isnan(scores[i]) else 0.0, proposal_ids[i])
    return sorted(range(len(proposal_ids)), key=key)
