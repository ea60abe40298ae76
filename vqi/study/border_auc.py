"""Pixel AUC on cable borders: inside the 1-px ring just outside each annotated thin instance
(the ring its enlargement proposal gains at k = 1), how well a map tells the truly thin pixels
from the others (docs/metrics.md, "Review under a budget").

Fed image by image with the maps the rankers' evidence pass already holds (no extra pass), pooled
over the split's rings: one score and one true/false label per ring pixel, a pixel in two rings
counted in each (each ring is read in its own instance's map).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import ENLARGE, Proposal
from vqi.study.budget import ranking_auc
from vqi.study.rankers import CAM, CAM_FINE, LOTS, PROBS, Evidence

BORDER_K = 1
"""The ring's width: the pixels an enlargement at k = 1 would label."""

MAPS = {"cam": CAM, "cam_fine": CAM_FINE, "lots": LOTS, "softmax": PROBS}
"""Map name (the ranker that averages it) -> the evidence it is read from."""


def maps_of(needs: Iterable[str]) -> list[str]:
    """The maps an evidence pass computing `needs` holds."""
    needs = set(needs)
    return [name for name, key in MAPS.items() if key in needs]


def thin_map(evidence: Evidence, name: str, class_name: str) -> np.ndarray | None:
    """The H x W map `name` of a thin class in one image (None: the class is not predicted)."""
    if name == "softmax":
        return None if evidence.probs is None else evidence.probs[evidence.class_ids[class_name]]
    per_class = {"cam": evidence.cams, "cam_fine": evidence.fine_cams, "lots": evidence.lots}[name]
    return per_class.get(class_name)


class BorderAUC:
    """Accumulates ring pixels (`update`, one image at a time); `aucs()` gives per map
    P(a true thin ring pixel scores above another ring pixel), ties half. A map missing for a
    ring (its class not predicted in that image) scores its pixels NaN, which rank lowest."""

    def __init__(self, maps: list[str]):
        unknown = [m for m in maps if m not in MAPS]
        if unknown:
            raise ValueError(f"unknown border maps {unknown}; expected some of {list(MAPS)}")
        self.maps = list(maps)
        self.truths: list[np.ndarray] = []
        self.scores: dict[str, list[np.ndarray]] = {name: [] for name in self.maps}

    def update(self, proposals: list[Proposal], evidence: Evidence, truth: np.ndarray,
               truth_ids: dict[str, int]) -> None:
        """One image's enlargement rings at k = 1 (`truth`: its true mask, class ids `truth_ids`)."""
        for p in proposals:
            if p.kind != ENLARGE:
                continue
            ring = regions.enlargement(evidence.instances[p.annotation_id], evidence.label, BORDER_K)
            if not ring.any():
                continue
            self.truths.append(truth[ring] == truth_ids[p.class_name])
            for name in self.maps:
                values = thin_map(evidence, name, p.class_name)
                self.scores[name].append(np.full(int(ring.sum()), np.nan) if values is None else values[ring])

    def counts(self) -> dict[str, int]:
        """Ring pixels pooled so far, and how many of them are truly thin."""
        return {"pixels": int(sum(t.size for t in self.truths)), "true_thin": int(sum(t.sum() for t in self.truths))}

    def aucs(self) -> dict[str, float]:
        """Per map its pixel AUC (NaN when the rings hold no true or no other pixel)."""
        if not self.truths:
            return {name: float("nan") for name in self.maps}
        labels = np.concatenate(self.truths)
        return {name: ranking_auc(np.concatenate(self.scores[name]), labels) for name in self.maps}
