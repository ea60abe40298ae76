"""Each ranker on a hand-made image whose right order is known; the review order's ties and NaNs."""
from __future__ import annotations

import numpy as np
import pytest

from vqi.augment import regions
from vqi.augment.proposals import ENLARGE, UNLABELLED, Proposal
from vqi.study.rankers import Evidence, review_order
from vqi.study.rankers.cam import CamRanker
from vqi.study.rankers.cam_fine import FineCamRanker
from vqi.study.rankers.cleanlab import CleanlabRanker, pixel_label_quality
from vqi.study.rankers.lots import LotsRanker
from vqi.study.rankers.random import RandomRanker
from vqi.study.rankers.softmax import SoftmaxRanker
from vqi.study.rankers.width import WidthRanker, annotated_width

H = W = 24
CLASS_IDS = {"background": 0, "cable": 1}


def box(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def proposal(name, region, kind=UNLABELLED, annotation_id=None):
    return Proposal(proposal_id=name, image="a", kind=kind, class_name="cable", score=0.0,
                    region=regions.encode(region), bbox=regions.bbox(region), area=int(region.sum()),
                    annotation_id=annotation_id, k=1 if kind == ENLARGE else None)


# Two regions: `hot` where the map and the cable probability are high, `cold` where they are low.
HOT, COLD = box(2, 6, 2, 20), box(14, 18, 2, 20)


def evidence(**kw):
    return Evidence(label=np.zeros((H, W), np.uint8), class_ids=CLASS_IDS, **kw)


def test_map_rankers_put_the_region_the_map_lights_first():
    cam = np.where(HOT, 0.9, 0.1)
    props = [proposal("a/cold", COLD), proposal("a/hot", HOT)]
    for ranker, ev in ((CamRanker(), evidence(cams={"cable": cam})), (FineCamRanker(), evidence(fine_cams={"cable": cam})),
                       (LotsRanker(), evidence(lots={"cable": cam}))):
        scores = ranker.scores(props, ev)
        assert scores == pytest.approx([0.1, 0.9])
        assert review_order([p.proposal_id for p in props], scores) == [1, 0]
    assert np.isnan(CamRanker().scores(props, evidence(cams={"cable": None}))).all()   # class not predicted
    assert np.isnan(LotsRanker().scores(props, evidence(cams={"cable": cam}))).all()    # reads its own maps only


def test_softmax_ranks_by_the_models_probability_of_the_thin_class():
    probs = np.stack([np.where(HOT, 0.2, 0.7), np.where(HOT, 0.8, 0.3)])
    scores = SoftmaxRanker().scores([proposal("a/cold", COLD), proposal("a/hot", HOT)], evidence(probs=probs))
    assert scores == pytest.approx([0.3, 0.8])


def test_cleanlab_puts_the_pixels_labelled_against_a_confident_model_first():
    """The real cleanlab: background labels where the model is sure of cable are the label errors."""
    label = np.zeros((H, W), np.uint8)
    label[COLD] = 1                                        # cold: labelled cable, the model agrees
    probs = np.stack([np.full((H, W), 0.6), np.full((H, W), 0.4)])
    probs[:, HOT] = np.array([0.05, 0.95])[:, None]        # hot: labelled background, model says cable
    probs[:, COLD] = np.array([0.1, 0.9])[:, None]
    quality = pixel_label_quality(label, probs)
    assert quality[HOT].max() < 0.1 and quality[COLD].min() > 0.8   # the mislabelled pixels score low
    scores = CleanlabRanker().scores([proposal("a/cold", COLD), proposal("a/hot", HOT)],
                                     Evidence(label=label, class_ids=CLASS_IDS, probs=probs))
    assert scores[1] > 0.9 > 0.2 > scores[0]
    void = label.copy()
    void[0, 0] = 255                                       # void pixels are read as background, not an error
    assert pixel_label_quality(void, probs).shape == (H, W)


def test_width_ranks_wide_annotations_first_and_regions_last():
    thin, wide = box(4, 5, 2, 22), box(10, 13, 2, 22)
    assert annotated_width(thin) == pytest.approx(1.0, abs=0.2) and annotated_width(wide) == pytest.approx(3.0, abs=0.5)
    props = [proposal("a/enlarge/1", regions.dilate(thin, 1) & ~thin, ENLARGE, 1),
             proposal("a/enlarge/2", regions.dilate(wide, 1) & ~wide, ENLARGE, 2), proposal("a/region", COLD)]
    scores = WidthRanker().scores(props, evidence(instances={1: thin, 2: wide}))
    assert review_order([p.proposal_id for p in props], scores) == [1, 0, 2] and scores[2] == 0


def test_random_is_seeded_per_proposal_and_ignores_the_rest_of_the_split():
    props = [proposal(f"a/{i}", HOT) for i in range(50)]
    first = RandomRanker(seed=3).scores(props, evidence())
    assert first == RandomRanker(seed=3).scores(props, evidence())
    assert first[:5] == RandomRanker(seed=3).scores(props[:5], evidence())
    assert first != RandomRanker(seed=4).scores(props, evidence())
    assert 0.3 < np.mean(first) < 0.7 and len(set(first)) == 50


def test_review_order_puts_nan_last_and_breaks_ties_by_id():
    ids = ["c", "a", "b", "d"]
    assert review_order(ids, [0.5, 0.5, float("nan"), 0.9]) == [3, 1, 0, 2]
