"""Budget curves: how much a split's labels improve when an expert reviews the top share of the
proposals in a ranker's order (the spec's "Review under a budget").

`label_iou_after` applies the reviewed proposals' decisions to every image and measures the
split's label IoU against the truth; `aubc` is the trapezoid area under a curve over budgets in
[0, 1]; `ranking_auc` says how well a ranker's scores separate good proposals from bad ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from vqi.review.apply import apply_to_image
from vqi.augment.proposals import ACCEPT, Proposal
from vqi.data.label_quality import LabelIoU


@dataclass
class SplitImage:
    """What applying decisions to one image needs: its label and true masks and its annotations."""
    stem: str
    label: np.ndarray
    truth: np.ndarray
    annotations: dict[int, dict]


def label_iou_after(images: list[SplitImage], proposals: list[Proposal], class_names: dict[int, str]) -> dict[str, float]:
    """Per-class label IoU of the split against the truth once the accepted proposals are applied."""
    accepted: dict[str, list[Proposal]] = {}
    for p in proposals:
        if p.decision == ACCEPT:
            accepted.setdefault(p.image, []).append(p)
    iou = LabelIoU()
    for image in images:
        mask = image.label
        if image.stem in accepted:
            mask = apply_to_image(image.label, image.annotations, accepted[image.stem], class_names)[0]
        iou.update(mask, image.truth)
    return iou.metrics()


def aubc(budgets: list[float], values: list[float]) -> float:
    """Trapezoid area under a budget curve over [0, 1] (budgets must start at 0 and end at 1)."""
    if not budgets or budgets[0] != 0 or budgets[-1] != 1 or any(b >= c for b, c in zip(budgets, budgets[1:])):
        raise ValueError(f"budget.budgets must rise from 0 to 1, got {budgets}")
    x, y = np.asarray(budgets, float), np.asarray(values, float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def ranking_auc(scores: list[float], good: list[bool]) -> float:
    """P(a good proposal scores above a bad one), ties half (Mann-Whitney); NaN scores rank lowest;
    NaN when either group is empty."""
    good_mask = np.asarray(good, bool)
    n_good, n_bad = int(good_mask.sum()), int((~good_mask).sum())
    if n_good == 0 or n_bad == 0:
        return float("nan")
    values = np.asarray(scores, float)
    values = np.where(np.isnan(values), -np.inf, values)
    ranks = rankdata(values)
    return float((ranks[good_mask].sum() - n_good * (n_good + 1) / 2) / (n_good * n_bad))
