"""`random`: a seeded uniform score per proposal, the same for a proposal id whatever else the
split holds (the floor every ranker must beat)."""
import hashlib

import numpy as np

from vqi.study.rankers import Ranker


class RandomRanker(Ranker):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def score(self, proposal, region, evidence):
        digest = hashlib.sha256(f"{self.seed}/{proposal.proposal_id}".encode()).digest()
        return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).random())
