"""A simulated expert for generated data: decides each proposal from the known truth.

`decide` accepts a proposal iff its precision against the truth is at least `min_precision`
(enlargement: the share of its ring that is truly the thin class; perplexed: the share that is
truly a distractor), then inverts each decision with probability `flip` (seeded): a fallible
expert. One draw per proposal whatever the outcome, so a seed flips the same proposals at
every `flip`.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import ACCEPT, ENLARGE, REJECT, Proposal
from vqi.metrics.label_quality import DISTRACTOR, region_precision


def decide(proposals: list[Proposal], truth_of: Callable[[str], np.ndarray], class_ids: Mapping[str, int],
           flip: float = 0.0, seed: int = 0, min_precision: float = 0.5) -> None:
    """Set every proposal's decision; `truth_of(stem)` is that image's true mask (5 = distractor)."""
    if not 0 <= flip <= 1:
        raise ValueError(f"augment.oracle.flip must be in [0, 1], got {flip}")
    rng = np.random.default_rng(seed)
    for proposal in proposals:
        truth = truth_of(proposal.image)
        region = regions.decode(proposal.region, *truth.shape)
        target = class_ids[proposal.class_name] if proposal.kind == ENLARGE else DISTRACTOR
        precision = region_precision(region, truth == target)
        accept = not math.isnan(precision) and precision >= min_precision
        if rng.random() < flip:
            accept = not accept
        proposal.decision = ACCEPT if accept else REJECT
        proposal.decided_by = "policy:oracle"
        proposal.note = f"oracle: precision {precision:.2f}" + (" (flipped)" if accept != (precision >= min_precision) else "")
