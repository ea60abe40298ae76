"""The simulated expert under a review budget (generated data: it reads the truth).

For each proposal it reviews, the oracle decides what a careful expert would (the spec's "Review
under a budget"): an enlargement is accepted at the k in 0..k_max that maximises the instance's
label IoU against the truth within its reach (k = 0 rejects it); an unlabelled region is labelled
its thin class if at least half of it is truly that class, `perplexed` if at least half is a true
distractor, else rejected. `flip = q` replaces each decision by a wrong one (uniformly among the
others) with probability q, from one seeded stream in proposal-id order, so a seed corrupts the
same proposals at every budget and for every ranker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import ACCEPT, ENLARGE, PENDING, PERPLEXED, REJECT, Proposal
from vqi.data.label_quality import DISTRACTOR

MIN_SHARE = 0.5
"""An unlabelled region takes a label when at least this share of it is truly that object."""


@dataclass(frozen=True)
class Verdict:
    """What the expert does with one proposal: k (enlargements; 0 = reject) or label ("" = reject)."""
    k: int = 0
    label: str = ""

    @property
    def accepts(self) -> bool:
        return self.k > 0 or bool(self.label)


def best_k(instance: np.ndarray, label_mask: np.ndarray, truth_of_class: np.ndarray, k_max: int) -> int:
    """The k in 0..k_max whose enlargement gives the instance the highest IoU against the true
    class pixels within its reach (its k_max dilation); ties: the smallest k."""
    reach = regions.dilate(instance, k_max)
    truth = truth_of_class & reach
    best, best_iou = 0, -1.0
    for k in range(k_max + 1):
        labelled = instance | regions.enlargement(instance, label_mask, k)
        union = int((labelled | truth).sum())
        iou = int((labelled & truth).sum()) / union if union else 0.0
        if iou > best_iou + 1e-12:
            best, best_iou = k, iou
    return best


def region_label(region: np.ndarray, truth: np.ndarray, class_id: int, class_name: str) -> str:
    """The thin class, `perplexed` or "" (reject) for an unlabelled region, by its true pixels."""
    area = int(region.sum())
    if area == 0:
        return ""
    if (truth[region] == class_id).sum() >= MIN_SHARE * area:
        return class_name
    if (truth[region] == DISTRACTOR).sum() >= MIN_SHARE * area:
        return PERPLEXED
    return ""


def verdict(proposal: Proposal, label_mask: np.ndarray, truth: np.ndarray, class_ids: dict[str, int],
            instance: np.ndarray | None, k_max: int) -> Verdict:
    """The careful expert's decision on one proposal (`instance`: an enlargement's instance mask)."""
    class_id = class_ids[proposal.class_name]
    if proposal.kind == ENLARGE:
        return Verdict(k=best_k(instance, label_mask, truth == class_id, k_max))
    region = regions.decode(proposal.region, *label_mask.shape)
    return Verdict(label=region_label(region, truth, class_id, proposal.class_name))


def flipped(verdicts: dict[str, Verdict], proposals: list[Proposal], k_max: int, flip: float,
            seed: int) -> dict[str, Verdict]:
    """Each verdict replaced, with probability `flip`, by a uniformly drawn wrong one (two draws
    per proposal in id order whatever happens, so a seed flips the same proposals at every q)."""
    if not 0 <= flip <= 1:
        raise ValueError(f"augment.oracle.flip must be in [0, 1], got {flip}")
    rng = np.random.default_rng(seed)
    out = {}
    for proposal in sorted(proposals, key=lambda p: p.proposal_id):
        right = verdicts[proposal.proposal_id]
        draw, pick = rng.random(), rng.random()
        if draw >= flip:
            out[proposal.proposal_id] = right
            continue
        if proposal.kind == ENLARGE:
            wrong = [Verdict(k=k) for k in range(k_max + 1) if k != right.k]
        else:
            wrong = [Verdict(label=x) for x in (proposal.class_name, PERPLEXED, "") if x != right.label]
        out[proposal.proposal_id] = wrong[min(int(pick * len(wrong)), len(wrong) - 1)]
    return out


def reviewed(count: int, budget: float) -> int:
    """How many of `count` proposals a budget (a share in [0, 1]) reviews: ceil(B·n)."""
    if not 0 <= budget <= 1:
        raise ValueError(f"augment.oracle.budget must be in [0, 1], got {budget}")
    return min(count, math.ceil(budget * count - 1e-9))


def apply_verdicts(proposals: list[Proposal], order: list[int], verdicts: dict[str, Verdict], budget: float) -> None:
    """Set the decisions of the first ceil(B·n) proposals in `order` from their verdicts; the
    rest stay pending (not applied)."""
    chosen = set(order[:reviewed(len(proposals), budget)])
    for index, proposal in enumerate(proposals):
        if index not in chosen:
            proposal.decision, proposal.decided_by = PENDING, ""
            continue
        v = verdicts[proposal.proposal_id]
        proposal.decision = ACCEPT if v.accepts else REJECT
        proposal.decided_by = "policy:oracle"
        if proposal.kind == ENLARGE:
            proposal.k = v.k if v.accepts else proposal.k
        else:
            proposal.label = v.label


def image_verdicts(proposals: list[Proposal], label_mask: np.ndarray, truth: np.ndarray,
                   instances: dict[int, np.ndarray], class_ids: dict[str, int], k_max: int) -> dict[str, Verdict]:
    """The careful expert's verdict on each of one image's proposals, by proposal id."""
    return {p.proposal_id: verdict(p, label_mask, truth, class_ids, instances.get(p.annotation_id), k_max)
            for p in proposals}
