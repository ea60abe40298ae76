"""`cleanlab`: confident learning's per-pixel label quality (cleanlab.segmentation, softmin) on
the model's probabilities: 1 − its mean over the proposal, so likely label errors come first.

cleanlab is AGPL-3.0 and an optional extra (`pip install vqi[study]`; `make install` installs it)."""
import numpy as np

from vqi.classes import BACKGROUND, IGNORE_INDEX
from vqi.study.rankers import PROBS, Ranker


def pixel_label_quality(label: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """H x W label quality of `label` (class ids; void read as background) under `probs` (C x H x W)."""
    try:
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError as err:
        raise ImportError("augment.ranker=cleanlab needs cleanlab: pip install 'vqi[study]' "
                          "(make install installs it)") from err
    labels = np.where(label == IGNORE_INDEX, BACKGROUND, label).astype(np.int64)[None]
    _, pixels = get_label_quality_scores(labels, probs[None].astype(np.float32), method="softmin", verbose=False)
    return pixels[0]


class CleanlabRanker(Ranker):
    name = "cleanlab"
    needs = frozenset({PROBS})

    def scores(self, proposals, evidence):
        if not proposals:
            return []
        quality = pixel_label_quality(evidence.label, evidence.probs)   # once per image
        return [1.0 - float(quality[evidence.region(p)].mean()) for p in proposals]
