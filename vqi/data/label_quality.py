"""Annotation quality against known truth (the spec's "Known truth" section).

Generated data knows the true mask R of every image; real data does not, so nothing here is
needed to run the pipeline. Masks are uint8 class ids: the annotated mask A (what training
reads, `perplexed` = 5 after augmentation, 255 = void) and the true mask R (5 = a distractor,
the unannotated cable-like objects that perplexed proposals should find).

- **Label IoU**: per-class IoU of A against R from one confusion matrix over every pixel of a
  split (pixels void in either ignored; 5 counts as background, as in Table II).
- **Proposal precision / recall** of the accepted changes, per kind, from the masks before (A)
  and after (A') augmentation: enlargement = pixels that went from background to a thin class,
  perplexed = pixels that became 5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vqi.classes import BACKGROUND, CLASS_NAMES, IGNORE_INDEX, PERPLEXED
from vqi.engine.confusion import ConfusionMatrix

DISTRACTOR = PERPLEXED
"""Id of a distractor in a true mask: the class that a perplexed proposal should claim."""


class LabelIoU:
    """Accumulates (annotated, true) mask pairs of a split; `metrics()` gives per-class IoU."""

    def __init__(self):
        self.cm = ConfusionMatrix(len(CLASS_NAMES))

    def update(self, annotated: np.ndarray, truth: np.ndarray) -> None:
        if annotated.shape != truth.shape:
            raise ValueError(f"annotated mask {annotated.shape} and true mask {truth.shape} differ in size")
        target = np.where(annotated == IGNORE_INDEX, IGNORE_INDEX, truth)
        pred = np.where(target == IGNORE_INDEX, BACKGROUND, annotated)
        self.cm.update(torch.from_numpy(target.astype(np.int64)), torch.from_numpy(pred.astype(np.int64)))

    def metrics(self) -> dict[str, float]:
        """`iou_<class>` for every class and `iou_overall` (foreground mean), as fractions."""
        return {k: v for k, v in self.cm.metrics().items() if k.startswith("iou_")}


@dataclass
class _Counts:
    proposed: int = 0      # accepted pixels
    correct: int = 0       # of those, truly the object
    found: int = 0         # missed pixels that the accepted ones recover
    missed: int = 0        # pixels of the object the annotation lacks

    def add(self, accepted: np.ndarray, true: np.ndarray, missed: np.ndarray) -> None:
        self.proposed += int(accepted.sum())
        self.correct += int((accepted & true).sum())
        self.found += int((accepted & missed).sum())
        self.missed += int(missed.sum())

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.correct / self.proposed if self.proposed else math.nan,
                "recall": self.found / self.missed if self.missed else math.nan,
                "pixels": float(self.proposed), "missed_pixels": float(self.missed)}


@dataclass
class ProposalQuality:
    """Precision and recall of the accepted changes of a split, pooled over its pixels.

    enlarge: precision = |E ∩ R_c| / |E|, recall = |E ∩ (R_c \\ A_c)| / |R_c \\ A_c| for each thin
    class c (E: background in A, c in A'); perplexed: the same with the distractors D, and
    D \\ (anything annotated in A) as the missed set.
    """
    thin_class_ids: tuple[int, ...]
    enlarge: _Counts = field(default_factory=_Counts)
    perplexed: _Counts = field(default_factory=_Counts)

    def update(self, before: np.ndarray, after: np.ndarray, truth: np.ndarray) -> None:
        for c in self.thin_class_ids:
            true = truth == c
            self.enlarge.add((before == BACKGROUND) & (after == c), true, true & (before != c))
        distractor = truth == DISTRACTOR
        self.perplexed.add((before != PERPLEXED) & (after == PERPLEXED), distractor,
                           distractor & (before == BACKGROUND))

    def metrics(self) -> dict[str, float]:
        """`<kind>/precision`, `<kind>/recall`, `<kind>/pixels`, `<kind>/missed_pixels`."""
        return {f"{kind}/{k}": v for kind, counts in (("enlarge", self.enlarge), ("perplexed", self.perplexed))
                for k, v in counts.as_dict().items()}
