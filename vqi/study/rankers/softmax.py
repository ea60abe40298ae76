"""`softmax`: the model's own probability of the thin class, mean over the proposal (no explanation)."""
from vqi.study.rankers import PROBS, Ranker, mean_over


class SoftmaxRanker(Ranker):
    name = "softmax"
    needs = frozenset({PROBS})

    def score(self, proposal, region, evidence):
        return mean_over(evidence.probs[evidence.class_ids[proposal.class_name]], region)
