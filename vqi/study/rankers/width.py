"""`width`: an enlargement's annotated instance width (area / skeleton length), no model at all.

It measures whatever the annotation's own geometry gives away about the truth: on data whose
annotated width leaks the true width it is a strong blind ranker. Unlabelled regions score 0,
after every enlargement."""
import numpy as np
from skimage.morphology import skeletonize

from vqi.augment.proposals import ENLARGE
from vqi.study.rankers import Ranker


def annotated_width(instance: np.ndarray) -> float:
    """Area / skeleton length in pixels (a blob with an empty skeleton: its area)."""
    length = int(skeletonize(instance).sum())
    return float(instance.sum()) / max(length, 1)


class WidthRanker(Ranker):
    name = "width"

    def score(self, proposal, region, evidence):
        if proposal.kind != ENLARGE:
            return 0.0
        return annotated_width(evidence.instances[proposal.annotation_id])
