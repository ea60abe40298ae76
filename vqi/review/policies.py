"""Decisions with no expert: a policy pre-fills every proposal's decision (and an accepted
unlabelled region's label) where a run has no one to review it."""
from __future__ import annotations

from vqi.augment.proposals import ACCEPT, ENLARGE, PENDING, PERPLEXED, REJECT, UNLABELLED, Proposal

POLICIES = ("review", "accept_all", "threshold", "dilate")
"""Decisions with no expert: `review` leaves every proposal pending; `accept_all` accepts all;
`threshold` accepts those whose ranker score is >= the threshold; `dilate` accepts every
enlargement and rejects every unlabelled region (blind dilation: the control that uses no model)."""


def decide(proposals: list[Proposal], policy: str, threshold: float, unlabelled_label: str = PERPLEXED) -> None:
    """Pre-fill decisions for a run with no expert; an accepted unlabelled region gets
    `unlabelled_label` (`perplexed`, as the paper labels them, or `thin` for its own thin class)."""
    if policy not in POLICIES:
        raise ValueError(f"augment.policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if unlabelled_label not in (PERPLEXED, "thin"):
        raise ValueError(f"augment.unlabelled_label must be perplexed or thin, not {unlabelled_label!r}")
    for proposal in proposals:
        if policy == "accept_all":
            accept = True
        elif policy == "threshold":
            accept = proposal.score >= threshold
        elif policy == "dilate":
            accept = proposal.kind == ENLARGE
        else:
            accept = None
        proposal.decision = PENDING if accept is None else ACCEPT if accept else REJECT
        if accept and proposal.kind == UNLABELLED:
            proposal.label = proposal.class_name if unlabelled_label == "thin" else PERPLEXED
        proposal.decided_by = "" if policy == "review" else f"policy:{policy}"
