"""`lots`: the LOTS map (xai=lots, at input resolution), mean over the proposal: does a map that
is not bound to the target layer's grid tell the expert which thin borders are worth a look?"""
from vqi.study.rankers import LOTS, Ranker, mean_over


class LotsRanker(Ranker):
    name = "lots"
    needs = frozenset({LOTS})

    def score(self, proposal, region, evidence):
        return mean_over(evidence.lots.get(proposal.class_name), region)
