"""Stage `augment`: propose annotation changes, rank them for the expert, let the expert (or a
policy) decide, and write the augmented training split.

Every thin instance is proposed for enlargement and every region the model predicts as a thin
class outside the labels is proposed for a label (vqi.augment.proposals); no score filters them.
`augment.ranker` orders them for review (conf/ranker/: cam, cam_fine, lots, softmax, cleanlab,
random, width; the score is the ranker's). Policies: `review` (the expert edits review_file),
`accept_all`, `threshold` (score >= accept_threshold), `dilate` (every enlargement at k, no
region: the blind control), and `oracle` (generated data: a simulated expert who reviews the
top `augment.oracle.budget` share in ranker order, reading the truth; vqi.study.oracle).
When the split has true masks, the stage reports the label IoU against the truth before and
after, and the accepted changes' precision and recall per kind.

Config keys: `augment.*` (ranker, method, checkpoint, split, output_split, thin_classes, enlarge.*,
unlabelled.*, policy, accept_threshold, unlabelled_label, oracle.*, review_dir, review_file,
force, batch_size), `model.fine_target_layer` (ranker cam_fine), `data.processed_dir`,
`paths.tables_dir` (Table I's chosen method), `device`, `xai.{amp, amp_dtype, channels_last}`;
ranker lots: `conf/xai/lots.yaml`, or the run's `xai.*` when it runs with `xai=lots`.

The review file is the expert's: once written it is never overwritten; `augment.force=true`
moves it aside (timestamped) before proposing anew. The original split is never written to.
"""
from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from vqi.augment.proposals import Proposal
from vqi.review import page as review_page
from vqi.review.apply import ApplySummary, apply_to_image, augmented_coco, split_decisions
from vqi.review.file import read_review, write_review
from vqi.review.policies import POLICIES as REVIEW_POLICIES, decide
from vqi.classes import CLASS_IDS
from vqi.config import build_ranker, proposal_explainers, with_xai_method
from vqi.data.coco import iter_image_annotations
from vqi.data.dataset import read_mask, read_split
from vqi.data.label_quality import LabelIoU, ProposalQuality
from vqi.data.prepared import current_fingerprint
from vqi.data.rasterize import instance_mask
from vqi.reporting.chosen import chosen_method
from vqi.study import oracle
from vqi.study.proposing import ProposedImage, baseline_proposals
from vqi.study.rankers import Ranker, review_order
from vqi.utils.atomic import atomic_path, write_bytes_if_changed, write_json
from vqi.utils.background import BackgroundWorker
from vqi.utils.progress import progress
from vqi.xai.maps import file_hash

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"augment-{cfg.experiment_name}"


POLICIES = (*REVIEW_POLICIES, "oracle")


def proposed_images(cfg: DictConfig, method_name: str, rankers: dict[str, Ranker],
                    sheets: BackgroundWorker | None) -> Iterator[ProposedImage]:
    """The baseline's proposals per image of `augment.split`, scored by `rankers` (vqi.study.proposing)."""
    return baseline_proposals(cfg, method_name, with_xai_method(cfg, method_name).xai,
                              partial(proposal_explainers, cfg, method_name), rankers, sheets)


def propose(cfg: DictConfig, method_name: str) -> list[Proposal]:
    """Every proposal of the split in `augment.ranker`'s review order (and its review sheets)."""
    ranker = build_ranker(cfg, str(cfg.augment.ranker))
    with BackgroundWorker() as sheets:
        proposals = [p for image in proposed_images(cfg, method_name, {ranker.name: ranker}, sheets)
                     for p in image.proposals]
    order = review_order([p.proposal_id for p in proposals], [p.score for p in proposals])
    return [proposals[i] for i in order]


def _truth_dir(cfg: DictConfig) -> Path:
    return Path(cfg.data.processed_dir) / "masks_truth" / str(cfg.augment.split)


def decide_all(cfg: DictConfig, proposals: list[Proposal], doc: dict) -> None:
    """Pre-fill the decisions by `augment.policy`; the oracle reviews the top `oracle.budget` share
    of `proposals` (already in review order) reading the split's true masks."""
    a = cfg.augment
    if a.policy not in POLICIES:
        raise ValueError(f"augment.policy: expected one of {', '.join(POLICIES)}, got {a.policy!r}")
    if a.policy != "oracle":
        decide(proposals, a.policy, float(a.accept_threshold), str(a.unlabelled_label))
        return
    truth_dir = _truth_dir(cfg)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"augment.policy=oracle decides from the true masks, but {truth_dir} does not "
                                "exist: only generated data (data=synthetic) has them")
    processed = Path(cfg.data.processed_dir)
    by_image = defaultdict(list)
    for proposal in proposals:
        by_image[proposal.image].append(proposal)
    verdicts = {}
    for img, anns in iter_image_annotations(doc):
        stem, shape = Path(img["file_name"]).stem, (img["height"], img["width"])
        if stem not in by_image:
            continue
        label = read_mask(processed / "masks" / a.split / f"{stem}.png", shape)
        instances = {ann["id"]: instance_mask(ann, *shape) for ann in anns}
        verdicts.update(oracle.image_verdicts(by_image[stem], label, read_mask(truth_dir / f"{stem}.png", shape),
                                              instances, CLASS_IDS, int(a.enlarge.k_max)))
    k_max = int(a.enlarge.k_max)
    verdicts = oracle.flipped(verdicts, proposals, k_max, float(a.oracle.flip), int(a.oracle.seed))
    oracle.apply_verdicts(proposals, list(range(len(proposals))), verdicts, float(a.oracle.budget))


def truth_quality(cfg: DictConfig, doc: dict) -> dict:
    """Label IoU of the split and of the augmented split against the truth, and the accepted
    changes' precision / recall per kind; {} when the split has no true masks (real data)."""
    a = cfg.augment
    processed, truth_dir = Path(cfg.data.processed_dir), _truth_dir(cfg)
    if not truth_dir.is_dir():
        return {}
    before_iou, after_iou = LabelIoU(), LabelIoU()
    quality = ProposalQuality(tuple(CLASS_IDS[c] for c in a.thin_classes))
    for img in doc["images"]:
        stem, shape = Path(img["file_name"]).stem, (img["height"], img["width"])
        before = read_mask(processed / "masks" / a.split / f"{stem}.png", shape)
        after = read_mask(processed / "masks" / a.output_split / f"{stem}.png", shape)
        truth = read_mask(truth_dir / f"{stem}.png", shape)
        before_iou.update(before, truth)
        after_iou.update(after, truth)
        quality.update(before, after, truth)
    return {"label_iou": {"before": before_iou.metrics(), "after": after_iou.metrics()},
            "proposal_quality": quality.metrics()}


def _png_bytes(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    return buffer.getvalue()


def apply(cfg: DictConfig, proposals: list[Proposal], doc: dict) -> ApplySummary:
    """Write `<output_split>.json` and its masks from the split's originals and accepted proposals.

    Files whose content is unchanged are not rewritten, so `stage=retrain` (keyed on the JSON)
    reruns only when the expert's decisions changed something.
    """
    a = cfg.augment
    processed = Path(cfg.data.processed_dir)
    if a.output_split == a.split:
        raise ValueError(f"augment.output_split must differ from augment.split ({a.split!r}): "
                         "the original annotations are never overwritten")
    names = {c["id"]: c["name"] for c in doc["categories"]}
    accepted, summary = split_decisions(proposals)
    by_stem = defaultdict(list)
    for p in accepted:
        by_stem[p.image].append(p)
    out_json = processed / "annotations" / f"{a.output_split}.json"
    enlarged, new_regions = [], {}
    for img, anns in progress(list(iter_image_annotations(doc)), desc="augment: apply"):
        stem = Path(img["file_name"]).stem
        label = np.array(Image.open(processed / "masks" / a.split / f"{stem}.png"))
        if by_stem.get(stem):
            label, grown, regions, changed = apply_to_image(label, {x["id"]: x for x in anns},
                                                            by_stem[stem], names)
            enlarged += grown
            new_regions[img["id"]] = regions
            summary.instances.update(changed.instances)
            summary.pixels.update(changed.pixels)
        target = processed / "masks" / a.output_split / f"{stem}.png"
        png = _png_bytes(label)
        if not (target.is_file() and target.read_bytes() == png):
            out_json.unlink(missing_ok=True)  # masks and JSON disagree until the JSON is rewritten
            with atomic_path(target) as tmp:
                tmp.write_bytes(png)
    document = json.dumps(augmented_coco(doc, enlarged, new_regions), indent=2) + "\n"
    write_bytes_if_changed(out_json, document.encode("utf-8"))
    return summary


def _source(cfg: DictConfig, method: str) -> dict[str, str]:
    """What the proposals come from: a review file made from another model, method, ranker or split is stale."""
    return {"checkpoint_sha256": file_hash(cfg.augment.checkpoint), "method": method,
            "ranker": str(cfg.augment.ranker),
            "split": str(cfg.augment.split),
            "dataset_fingerprint": current_fingerprint(Path(cfg.data.processed_dir))}


def _check_k(proposals: list[Proposal], review_file: Path, k_max: int) -> None:
    """Refuse an accepted enlargement whose k (edited by hand) exceeds augment.enlarge.k_max."""
    over = [p for p in proposals if p.decision == "accept" and p.k is not None and p.k > k_max]
    if over:
        raise ValueError(f"{review_file}: proposal {over[0].proposal_id}: field 'k' is {over[0].k}, above "
                         f"augment.enlarge.k_max={k_max} ({len(over)} such row(s)); lower k or raise k_max")


def _check_source(review_file: Path, source: dict[str, str]) -> None:
    """Refuse to apply a review file proposed from another checkpoint, method, split or dataset."""
    path = review_file.with_suffix(".source.json")
    if not path.is_file():
        log.warning("%s has no %s: cannot tell which model its proposals came from", review_file, path.name)
        return
    recorded = json.loads(path.read_text())
    changed = {k: (recorded.get(k), v) for k, v in source.items() if recorded.get(k) != v}
    if changed:
        what = "; ".join(f"{k} was {old}, is now {new}" for k, (old, new) in changed.items())
        raise ValueError(f"review file {review_file} was proposed from another baseline ({what}). "
                         "Set augment.force=true to propose anew (the old file is kept, timestamped), "
                         "or point augment.review_file elsewhere")


def run(cfg: DictConfig) -> dict[str, float]:
    a = cfg.augment
    review_file = Path(a.review_file)
    doc = read_split(Path(cfg.data.processed_dir), a.split)   # the split's COCO file, read once for every step
    method = chosen_method(cfg.paths.tables_dir, cfg.augment.method)
    mlflow.set_tag("xai_method", method)
    source = _source(cfg, method)
    if review_file.exists() and not a.force:
        _check_source(review_file, source)
        log.info("reusing the review file %s (the expert's decisions); augment.force=true proposes anew",
                 review_file)
        proposals = read_review(review_file)
        _check_k(proposals, review_file, int(a.enlarge.k_max))
    else:
        if review_file.exists():
            stamp = time.strftime('%Y%m%d-%H%M%S')
            kept = review_file.with_name(f"{review_file.stem}.{stamp}.csv")
            review_file.rename(kept)
            old_source = review_file.with_suffix(".source.json")
            if old_source.is_file():
                old_source.rename(review_file.with_name(f"{review_file.stem}.{stamp}.source.json"))
            log.info("augment.force: the previous review file was kept as %s", kept)
        proposals = propose(cfg, method)
        decide_all(cfg, proposals, doc)
        write_review(review_file, proposals)
        write_json(review_file.with_suffix(".source.json"), source)
    page = review_file.with_suffix(".html")
    review_page.write_review_page(page, proposals, review_file, "python -m vqi.run stage=augment")
    summary = apply(cfg, proposals, doc)
    if summary.pending:
        log.warning("%d proposal(s) await the expert's decision in %s (see %s); they are not applied",
                    summary.pending, review_file, page)
    quality = truth_quality(cfg, doc)
    report = {"ranker": str(a.ranker), "method": method, "policy": str(a.policy),
              "proposals": len(proposals), **summary.as_dict(), **quality}
    summary_path = Path(cfg.data.processed_dir) / "annotations" / f"{a.output_split}_summary.json"
    write_json(summary_path, report)
    mlflow.log_artifact(str(review_file), "review")
    mlflow.log_artifact(str(page), "review")
    if review_file.with_suffix(".source.json").is_file():
        mlflow.log_artifact(str(review_file.with_suffix(".source.json")), "review")
    mlflow.log_artifact(str(summary_path))
    log.info("augment: %d proposals, %d accepted, %d rejected, %d pending; pixels changed %s",
             len(proposals), summary.accepted, summary.rejected, summary.pending,
             dict(summary.pixels))
    metrics = {"proposals": len(proposals), "accepted": summary.accepted,
               "rejected": summary.rejected, "pending": summary.pending}
    metrics.update({f"pixels_changed_{k}": v for k, v in summary.pixels.items()})
    metrics.update({f"instances_changed_{k}": v for k, v in summary.instances.items()})
    for when, ious in quality.get("label_iou", {}).items():
        metrics.update({f"label_{k}/{when}": v for k, v in ious.items()})
    metrics.update(quality.get("proposal_quality", {}))
    if quality:
        key = f"iou_{a.thin_classes[0]}" if a.thin_classes else "iou_overall"  # not a fixed class name
        log.info("against the truth: label %s %.4f -> %.4f; accepted enlargement precision %.3f recall %.3f, "
                 "perplexed precision %.3f recall %.3f", key, quality["label_iou"]["before"][key],
                 quality["label_iou"]["after"][key], *(quality["proposal_quality"][f"{kind}/{m}"]
                 for kind in ("enlarge", "perplexed") for m in ("precision", "recall")))
    return metrics
