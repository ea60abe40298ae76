"""Stage `budget`: budget curves on generated data, no retraining.

The baseline's proposals for `augment.split` (as `stage=augment` makes them) are scored by every
ranker of `budget.rankers`; the oracle's verdict on each proposal is read from the truth once
(`budget.flip` makes it fallible); then for every ranker and budget B the top ceil(B·n)
proposals in that ranker's order take their verdicts and the split's label IoU against the truth
is measured. Writes `<budget.output_dir>/budget.json`: per ranker its curve, AUBC (points), and
how well its scores separate good proposals from bad (AUC, per kind); and per map the evidence
pass computed (cam, cam_fine, lots, softmax) its pixel AUC on cable borders (vqi.study.border_auc).

It also measures the no-expert threshold policy per ranker of `budget.thresholds` (every
proposal whose score is >= t accepted), from which the development seeds choose the study's
thresholds.

Config keys: `budget.*` (rankers, budgets, flip, class_name, thresholds, output_dir), `augment.*` (checkpoint,
method, split, thin_classes, enlarge.*, unlabelled.*, unlabelled_label, batch_size, oracle.seed), `seed`,
`data.processed_dir`, `model.fine_target_layer`, `paths.tables_dir`, `device`.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
from omegaconf import DictConfig

from vqi.augment import regions
from vqi.augment.proposals import ENLARGE, UNLABELLED
from vqi.review.policies import decide
from vqi.classes import CLASS_IDS, CLASS_NAMES
from vqi.config import build_ranker, proposal_explainers, with_xai_method
from vqi.data.coco import iter_image_annotations
from vqi.data.dataset import read_mask, read_split
from vqi.study import oracle
from vqi.study.border_auc import BorderAUC, maps_of
from vqi.study.budget import SplitImage, aubc, label_iou_after, ranking_auc
from vqi.reporting.chosen import chosen_method
from vqi.study.proposing import baseline_proposals
from vqi.study.rankers import review_order
from vqi.utils.atomic import write_json

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"budget-{cfg.experiment_name}"


def run(cfg: DictConfig) -> dict[str, float]:
    a, b = cfg.augment, cfg.budget
    processed = Path(cfg.data.processed_dir)
    truth_dir = processed / "masks_truth" / str(a.split)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"stage=budget needs the true masks {truth_dir}: only generated data "
                                "(data=synthetic) has them")
    if b.class_name not in a.thin_classes:
        raise ValueError(f"budget.class_name {b.class_name!r} is not one of augment.thin_classes {list(a.thin_classes)}")
    budgets = [float(x) for x in b.budgets]
    aubc(budgets, [0.0] * len(budgets))   # refuses budgets that do not rise from 0 to 1
    rankers = {str(name): build_ranker(cfg, str(name), "budget.rankers") for name in b.rankers}
    method = chosen_method(cfg.paths.tables_dir, cfg.augment.method)
    mlflow.set_tag("xai_method", method)
    k_max = int(a.enlarge.k_max)
    annotations = {Path(img["file_name"]).stem: ((img["height"], img["width"]), {ann["id"]: ann for ann in anns})
                   for img, anns in iter_image_annotations(read_split(processed, a.split))}
    images, proposals, verdicts = [], [], {}
    border = BorderAUC(maps_of(set().union(*(r.needs for r in rankers.values()))))
    for seen in baseline_proposals(cfg, method, with_xai_method(cfg, method).xai,
                                   partial(proposal_explainers, cfg, method), rankers, sheets=None):
        shape, anns = annotations[seen.stem]
        truth = read_mask(truth_dir / f"{seen.stem}.png", shape)
        border.update(seen.proposals, seen.evidence, truth, CLASS_IDS)
        images.append(SplitImage(seen.stem, seen.label, truth, anns))
        verdicts.update(oracle.image_verdicts(seen.proposals, seen.label, truth, seen.instances, CLASS_IDS, k_max))
        proposals += seen.proposals
    verdicts = oracle.flipped(verdicts, proposals, k_max, float(b.flip), int(a.oracle.seed))
    key = f"iou_{b.class_name}"
    ids = [p.proposal_id for p in proposals]
    good = _good(proposals, verdicts, images)
    result = {"method": method, "budgets": budgets, "proposals": len(proposals),
              "kinds": {kind: sum(p.kind == kind for p in proposals) for kind in (ENLARGE, UNLABELLED)},
              "class_name": str(b.class_name), "flip": float(b.flip), "rankers": {}}
    metrics = {}
    for name in rankers:
        scores = [p.scores[name] for p in proposals]
        order = review_order(ids, scores)
        curve = []
        for budget in budgets:
            oracle.apply_verdicts(proposals, order, verdicts, budget)
            curve.append(100 * label_iou_after(images, proposals, dict(enumerate(CLASS_NAMES)))[key])
        aucs = {kind: ranking_auc([s for s, p in zip(scores, proposals) if p.kind == kind],
                                  [g for g, p in zip(good, proposals) if p.kind == kind]) for kind in (ENLARGE, UNLABELLED)}
        result["rankers"][name] = {"curve": curve, "aubc": aubc(budgets, curve), "auc": aucs}
        metrics[f"aubc/{name}"] = result["rankers"][name]["aubc"]
        metrics.update({f"auc_{kind}/{name}": v for kind, v in aucs.items() if not np.isnan(v)})
        log.info("budget: %-9s AUBC %.2f, label %s %.2f -> %.2f (B=0 -> 1), AUC enlarge %.3f, unlabelled %.3f",
                 name, result["rankers"][name]["aubc"], key, curve[0], curve[-1], aucs[ENLARGE], aucs[UNLABELLED])
    result["pixel_auc_border"], result["border_pixels"] = border.aucs(), border.counts()
    metrics.update({f"pixel_auc_border/{name}": v for name, v in result["pixel_auc_border"].items() if not np.isnan(v)})
    log.info("budget: pixel AUC on cable borders (%d ring pixels at k=1, %d truly thin): %s",
             result["border_pixels"]["pixels"], result["border_pixels"]["true_thin"],
             ", ".join(f"{name} {v:.3f}" for name, v in result["pixel_auc_border"].items()) or "no map computed")
    result["thresholds"] = _threshold_policy(proposals, images, b.thresholds, int(a.enlarge.k), str(a.unlabelled_label), key)
    out = Path(b.output_dir) / "budget.json"
    write_json(out, result)
    mlflow.log_artifact(str(out))
    return {"proposals": len(proposals), **metrics}


def _threshold_policy(proposals, images, grids, k: int, unlabelled_label: str, key: str) -> dict[str, dict[str, float]]:
    """Per ranker of `grids` and threshold t: the label IoU (%) when every proposal whose score is
    >= t is accepted at the proposed k, with no expert (`augment.policy=threshold`)."""
    out = {}
    for name, grid in grids.items():
        if not proposals or name not in proposals[0].scores:
            continue
        for p in proposals:
            p.score, p.k = p.scores[name], (k if p.kind == ENLARGE else None)
        out[name] = {}
        for t in grid:
            decide(proposals, "threshold", float(t), unlabelled_label)
            out[name][f"{float(t):g}"] = 100 * label_iou_after(images, proposals, dict(enumerate(CLASS_NAMES)))[key]
    return out


def _good(proposals, verdicts, images) -> list[bool]:
    """Whether a proposal is worth the expert's time: an enlargement whose proposed ring is at
    least half true object, an unlabelled region the careful expert labels."""
    truth_of = {image.stem: image.truth for image in images}
    out = []
    for p in proposals:
        if p.kind == ENLARGE:
            ring = regions.decode(p.region, *truth_of[p.image].shape)
            out.append(bool((truth_of[p.image][ring] == CLASS_IDS[p.class_name]).mean() >= oracle.MIN_SHARE))
        else:
            out.append(bool(verdicts[p.proposal_id].label))
    return out
