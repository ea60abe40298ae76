"""`cam`: the chosen method's map, mean over the proposal (the paper's explanation)."""
from vqi.study.rankers import CAM, Ranker, mean_over


class CamRanker(Ranker):
    name = "cam"
    needs = frozenset({CAM})

    def score(self, proposal, region, evidence):
        return mean_over(evidence.cams.get(proposal.class_name), region)
