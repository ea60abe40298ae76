"""`cam_fine`: the chosen method at a layer of stride <= 8 (`model.fine_target_layer`), mean over
the proposal: does a finer map order the review better than the usual coarse one?"""
from vqi.study.rankers import CAM_FINE, Ranker, mean_over


class FineCamRanker(Ranker):
    name = "cam_fine"
    needs = frozenset({CAM_FINE})

    def score(self, proposal, region, evidence):
        return mean_over(evidence.fine_cams.get(proposal.class_name), region)
