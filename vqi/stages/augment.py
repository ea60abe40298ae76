"""Stage `augment`: propose annotation changes, let the expert (or a policy) decide, and write
the augmented training split.

Proposers (`augment.proposer`): `cam` (the chosen method's explanations: the paper's), `random_cam`
(the same rules on Random-CAM maps: proposals from noise) and `dilate` (every thin instance grown
by k: no explanation at all). Policies: `review` (the expert), `accept_all`, `threshold`, and
`oracle` (generated data: a simulated expert deciding from the truth, `augment.oracle.*`).
When the split has true masks, the stage reports the label IoU against the truth before and
after, and the accepted changes' precision and recall per kind.

Config keys: `augment.*` (proposer, method, checkpoint, split, output_split, thin_classes,
enlarge.*, perplexed.*, policy, accept_threshold, oracle.*, review_dir, review_file, force,
batch_size), `data.processed_dir`, `paths.tables_dir` (Table I's chosen method), `device`,
`xai.{amp, amp_dtype, channels_last}` (CUDA mixed precision of the explanation pass).

The review file is the expert's: once written it is never overwritten; `augment.force=true`
moves it aside (timestamped) before proposing anew. The original split is never written to.
"""
from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader
from vqi.utils.progress import progress

from vqi.augment import oracle, review_page
from vqi.augment.apply import ApplySummary, apply_to_image, augmented_coco, split_decisions
from vqi.augment.proposals import (EnlargeRule, PerplexedRule, Proposal, propose_dilations,
                                   propose_enlargements, propose_perplexed)
from vqi.augment.regions import union
from vqi.augment.sheets import save_sheet, sheet_name
from vqi.augment.review import decide, read_review, write_review
from vqi.data.coco import iter_image_annotations
from vqi.classes import CLASS_IDS
from vqi.data.dataset import SegmentationDataset, read_mask, read_split
from vqi.data.prepared import current_fingerprint
from vqi.data.rasterize import instance_mask
from vqi.data.transforms import eval_transform
from vqi.engine.precision import Precision
from vqi.reporting.figures import to_rgb
from vqi.metrics.label_quality import LabelIoU, ProposalQuality
from vqi.models.checkpoint import load_model
from vqi.config import with_xai_method
from vqi.stages.explain import build_cam
from vqi.utils.background import BackgroundWorker
from vqi.utils.atomic import atomic_path, write_bytes_if_changed, write_json
from vqi.utils.device import resolve_device
from vqi.xai.maps import file_hash
from vqi.xai.targets import Unit

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"augment-{cfg.experiment_name}"


PROPOSERS = ("cam", "random_cam", "dilate")
POLICIES = ("review", "accept_all", "threshold", "oracle")
RANDOM_CAM = "random_cam"
"""The xai config of Random-CAM, whose maps the `random_cam` proposer uses."""


def chosen_method(cfg: DictConfig) -> str:
    """The maps the proposals come from: `dilate` (none), Random-CAM, `augment.method`, else the
    method Table I chose (written by `stage=report`)."""
    proposer = str(cfg.augment.proposer)
    if proposer not in PROPOSERS:
        raise ValueError(f"augment.proposer: expected one of {', '.join(PROPOSERS)}, got {proposer!r}")
    if proposer != "cam":
        return proposer if proposer == "dilate" else RANDOM_CAM
    if cfg.augment.method:
        return str(cfg.augment.method)
    path = Path(cfg.paths.tables_dir) / "chosen_method.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `stage=report` (Table I) first, "
                                "or set augment.method=<name>")
    return str(json.loads(path.read_text())["method"])


def _draw_sheet(path: Path, image: torch.Tensor, label: np.ndarray, pred: np.ndarray,
                drawn: dict[str, tuple[np.ndarray | None, np.ndarray]]) -> None:
    """One image's review sheet, from the model's input (as the masks: no second decode)."""
    save_sheet(path, review_page.sheet_tiles(to_rgb(image), label, pred, drawn))


def propose(cfg: DictConfig, method_name: str) -> list[Proposal]:
    """Explain the thin classes on every image of the split and collect proposals (and panels)."""
    a = cfg.augment
    processed = Path(cfg.data.processed_dir)
    device = resolve_device(cfg.device)
    xai_cfg = with_xai_method(cfg, method_name)
    precision = Precision.of(xai_cfg.xai)
    model, ckpt = load_model(a.checkpoint, device)
    model = precision.prepare(model, device)
    class_ids = {name: i for i, name in enumerate(ckpt["class_names"])}
    missing = [c for c in a.thin_classes if c not in class_ids]
    if missing:
        raise ValueError(f"augment.thin_classes: {missing} not among the model's classes {list(class_ids)}")
    method = build_cam(xai_cfg, model)
    doc = read_split(processed, a.split)
    entries = {Path(img["file_name"]).stem: (img, anns) for img, anns in iter_image_annotations(doc)}
    dataset = SegmentationDataset(processed, a.split, eval_transform(int(cfg.data.image_size)))
    loader = DataLoader(dataset, batch_size=int(a.batch_size), shuffle=False)
    enlarge = EnlargeRule(**a.enlarge)
    perplexed = PerplexedRule(**a.perplexed)
    panels_dir = Path(a.review_dir) / review_page.PANELS_DIR
    proposals: list[Proposal] = []

    def thin_units(preds: torch.Tensor) -> list[Unit]:
        """One unit per (image, thin class) the prediction holds: the explained targets."""
        return [Unit(i, class_ids[c], preds[i] == class_ids[c])
                for i in range(preds.shape[0]) for c in a.thin_classes if (preds[i] == class_ids[c]).any()]

    with BackgroundWorker() as sheets:
        for images, masks, stems in progress(loader, desc=f"augment: explain ({method_name})"):
            images = precision.inputs(images, device)
            with precision.context(device):
                preds, units, cams = method.predict_and_explain(images, thin_units)
            preds, cams = preds.cpu(), cams.detach().float().cpu().numpy()
            cam_of = {(u.index, u.class_id): cam for u, cam in zip(units, cams)}
            for i, stem in enumerate(stems):
                label = masks[i].numpy().astype(np.uint8)
                pred = preds[i].numpy().astype(np.uint8)
                cams_of_image = {name: cam_of.get((i, class_ids[name])) for name in a.thin_classes}
                found, drawn = _image_proposals(stem, entries[stem][1], label, pred, cams_of_image, class_ids,
                                                enlarge, perplexed)
                proposals += found
                if drawn:   # one sheet per image, drawn beside the next batch's passes
                    sheets.submit(_draw_sheet, panels_dir / sheet_name(stem), images[i].cpu(), label, pred, drawn)
    return proposals


def _image_proposals(stem: str, anns: list[dict], label: np.ndarray, pred: np.ndarray,
                     cams: dict[str, np.ndarray | None], class_ids: dict[str, int], enlarge: EnlargeRule,
                     perplexed: PerplexedRule) -> tuple[list[Proposal], dict[str, tuple[np.ndarray | None, np.ndarray]]]:
    """One image's proposals for each thin class of `cams` (class name -> its map, None when the
    class is not predicted), and per class with proposals its (map, proposed pixels) for the sheet."""
    found_all: list[Proposal] = []
    drawn: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
    for name, cam in cams.items():
        cid = class_ids[name]
        found = propose_perplexed(stem, label, pred == cid, cam, name, perplexed)
        if cam is not None:
            instances = [(ann["id"], instance_mask(ann, *label.shape)) for ann in anns if ann["category_id"] == cid]
            found = propose_enlargements(stem, label, instances, cam, name, enlarge) + found
        if found:
            drawn[name] = (cam, union([p.region for p in found], *label.shape))
        found_all += found
    return found_all, drawn


def propose_blind(cfg: DictConfig) -> list[Proposal]:
    """`augment.proposer=dilate`: every thin instance of the split grown by `enlarge.k`, no model."""
    a = cfg.augment
    processed = Path(cfg.data.processed_dir)
    unknown = [c for c in a.thin_classes if c not in CLASS_IDS]
    if unknown:
        raise ValueError(f"augment.thin_classes: {unknown} are not project classes {list(CLASS_IDS)}")
    proposals: list[Proposal] = []
    for img, anns in progress(list(iter_image_annotations(read_split(processed, a.split))), desc="augment: dilate"):
        stem = Path(img["file_name"]).stem
        label = read_mask(processed / "masks" / a.split / f"{stem}.png", (img["height"], img["width"]))
        for name in a.thin_classes:
            instances = [(ann["id"], instance_mask(ann, *label.shape))
                         for ann in anns if ann["category_id"] == CLASS_IDS[name]]
            proposals += propose_dilations(stem, label, instances, name, int(a.enlarge.k))
    return proposals


def _truth_dir(cfg: DictConfig) -> Path:
    return Path(cfg.data.processed_dir) / "masks_truth" / str(cfg.augment.split)


def decide_all(cfg: DictConfig, proposals: list[Proposal]) -> None:
    """Pre-fill the decisions by `augment.policy` (the oracle reads the split's true masks)."""
    a = cfg.augment
    if a.policy not in POLICIES:
        raise ValueError(f"augment.policy: expected one of {', '.join(POLICIES)}, got {a.policy!r}")
    if a.policy != "oracle":
        decide(proposals, a.policy, float(a.accept_threshold))
        return
    truth_dir = _truth_dir(cfg)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"augment.policy=oracle decides from the true masks, but {truth_dir} does not "
                                "exist: only generated data (data=synthetic) has them")
    shapes = {Path(img["file_name"]).stem: (img["height"], img["width"])
              for img in read_split(cfg.data.processed_dir, a.split)["images"]}
    oracle.decide(proposals, lambda stem: read_mask(truth_dir / f"{stem}.png", shapes[stem]), CLASS_IDS,
                  flip=float(a.oracle.flip), seed=int(a.oracle.seed), min_precision=float(a.oracle.min_precision))


def truth_quality(cfg: DictConfig) -> dict:
    """Label IoU of the split and of the augmented split against the truth, and the accepted
    changes' precision / recall per kind; {} when the split has no true masks (real data)."""
    a = cfg.augment
    processed, truth_dir = Path(cfg.data.processed_dir), _truth_dir(cfg)
    if not truth_dir.is_dir():
        return {}
    before_iou, after_iou = LabelIoU(), LabelIoU()
    quality = ProposalQuality(tuple(CLASS_IDS[c] for c in a.thin_classes))
    for img in read_split(processed, a.split)["images"]:
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


def apply(cfg: DictConfig, proposals: list[Proposal]) -> ApplySummary:
    """Write `<output_split>.json` and its masks from the split's originals and accepted proposals.

    Files whose content is unchanged are not rewritten, so `stage=retrain` (keyed on the JSON)
    reruns only when the expert's decisions changed something.
    """
    a = cfg.augment
    processed = Path(cfg.data.processed_dir)
    if a.output_split == a.split:
        raise ValueError(f"augment.output_split must differ from augment.split ({a.split!r}): "
                         "the original annotations are never overwritten")
    doc = read_split(processed, a.split)
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
    """What the proposals come from: a review file made from another model or split is stale."""
    checkpoint = None if method == "dilate" else file_hash(cfg.augment.checkpoint)  # dilation needs no model
    return {"checkpoint_sha256": checkpoint, "method": method,
            "split": str(cfg.augment.split),
            "dataset_fingerprint": current_fingerprint(Path(cfg.data.processed_dir))}


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
    method = chosen_method(cfg)
    mlflow.set_tag("xai_method", method)
    source = _source(cfg, method)
    if review_file.exists() and not a.force:
        _check_source(review_file, source)
        log.info("reusing the review file %s (the expert's decisions); augment.force=true proposes anew",
                 review_file)
        proposals = read_review(review_file)
    else:
        if review_file.exists():
            stamp = time.strftime('%Y%m%d-%H%M%S')
            kept = review_file.with_name(f"{review_file.stem}.{stamp}.csv")
            review_file.rename(kept)
            old_source = review_file.with_suffix(".source.json")
            if old_source.is_file():
                old_source.rename(review_file.with_name(f"{review_file.stem}.{stamp}.source.json"))
            log.info("augment.force: the previous review file was kept as %s", kept)
        proposals = propose_blind(cfg) if method == "dilate" else propose(cfg, method)
        decide_all(cfg, proposals)
        write_review(review_file, proposals)
        write_json(review_file.with_suffix(".source.json"), source)
    page = review_file.with_suffix(".html")
    review_page.write_review_page(page, proposals, review_file, "python -m vqi.run stage=augment")
    summary = apply(cfg, proposals)
    if summary.pending:
        log.warning("%d proposal(s) await the expert's decision in %s (see %s); they are not applied",
                    summary.pending, review_file, page)
    quality = truth_quality(cfg)
    report = {"proposer": str(a.proposer), "method": method, "policy": str(a.policy),
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
