"""The baseline's pass over a split that the augment and budget stages share: per image its
proposals (vqi.augment.proposals), every ranker's score of them, the evidence they were scored
from and, on request, its review sheet. Plain arguments: the stages load the model and build the
CAMs from their config (`vqi.config.proposal_explainers`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqi.augment.proposals import EnlargeRule, Proposal, UnlabelledRule, propose_for_image
from vqi.augment.regions import union
from vqi.review import page as review_page
from vqi.review.sheets import save_sheet, sheet_name
from vqi.data.coco import iter_image_annotations
from vqi.data.dataset import SegmentationDataset, read_split
from vqi.data.transforms import eval_transform
from vqi.engine.precision import Precision
from vqi.models.checkpoint import load_model
from vqi.reporting.figures import to_rgb
from vqi.study.evidence import explained_images
from vqi.study.rankers import CAM, Evidence, Ranker
from vqi.utils.background import BackgroundWorker
from vqi.utils.device import resolve_device
from vqi.utils.progress import progress
from vqi.xai.base import BaseCAM


@dataclass
class Explainers:
    """The CAMs of the pass: the method's at its usual layer, at the finer layer (ranker
    `cam_fine`) and LOTS (ranker `lots`); None where no ranker and no sheet needs them."""
    cam: BaseCAM
    fine: BaseCAM | None = None
    lots: BaseCAM | None = None


@dataclass
class ProposedImage:
    """One image's proposals, the masks of its thin instances, its annotated mask, and the
    evidence the rankers scored them from (maps, probabilities)."""
    stem: str
    proposals: list[Proposal]
    instances: dict[int, np.ndarray]
    label: np.ndarray
    evidence: Evidence


def evidence_needs(rankers: Mapping[str, Ranker], sheets: bool) -> set[str]:
    """What the pass must compute per image: what the rankers read, and the CAM for the sheets."""
    return set().union(*(r.needs for r in rankers.values())) | ({CAM} if sheets else set())


def _draw_sheet(path: Path, image: torch.Tensor, label: np.ndarray, pred: np.ndarray,
                drawn: dict[str, tuple[np.ndarray | None, np.ndarray]]) -> None:
    """One image's review sheet, from the model's input (as the masks: no second decode)."""
    save_sheet(path, review_page.sheet_tiles(to_rgb(image), label, pred, drawn))


def proposed_images(model: torch.nn.Module, class_names: list[str], device: torch.device, precision: Precision,
                    explainers: Explainers, *, processed_dir: Path, split: str, image_size: int, batch_size: int,
                    entries: Mapping[str, Iterable[dict]], thin_classes: list[str], enlarge: EnlargeRule,
                    unlabelled: UnlabelledRule, rankers: Mapping[str, Ranker], sheets: BackgroundWorker | None,
                    review_dir: Path, desc: str) -> Iterator[ProposedImage]:
    """Run the baseline over `split`: per image its proposals (from its annotations in `entries`, by
    stem), each ranker's score of them in `proposal.scores` order of `rankers` (the first ranker's
    also as `proposal.score`), and with `sheets` its review sheet drawn in the background
    (`<review_dir>/panels/`)."""
    class_ids = {name: i for i, name in enumerate(class_names)}
    missing = [c for c in thin_classes if c not in class_ids]
    if missing:
        raise ValueError(f"augment.thin_classes: {missing} not among the model's classes {list(class_ids)}")
    needs = evidence_needs(rankers, sheets is not None)
    loader = DataLoader(SegmentationDataset(processed_dir, split, eval_transform(int(image_size))),
                        batch_size=int(batch_size), shuffle=False)
    panels_dir = Path(review_dir) / review_page.PANELS_DIR
    images = explained_images(progress(loader, desc=desc), model, device, precision, class_ids, list(thin_classes),
                              needs, explainers.cam, explainers.fine, explainers.lots)
    for seen in images:
        found, instances = propose_for_image(seen.stem, entries[seen.stem], seen.label, seen.pred, class_ids,
                                             list(thin_classes), enlarge, unlabelled)
        evidence = Evidence(seen.label, class_ids, seen.probs, seen.cams, seen.fine_cams, instances, seen.lots)
        for name, ranker in rankers.items():
            for proposal, value in zip(found, ranker.scores(found, evidence)):
                proposal.scores[name] = round(value, 6)
        for proposal in found:
            proposal.score = next(iter(proposal.scores.values()), 0.0)
        if sheets is not None and found:   # one sheet per image, drawn beside the next batch's passes
            drawn = {name: (seen.cams.get(name), union([p.region for p in found if p.class_name == name],
                                                       *seen.label.shape))
                     for name in thin_classes if any(p.class_name == name for p in found)}
            sheets.submit(_draw_sheet, panels_dir / sheet_name(seen.stem), seen.image, seen.label, seen.pred, drawn)
        yield ProposedImage(seen.stem, found, instances, seen.label, evidence)


def baseline_proposals(cfg, method_name: str, xai, explainers: Callable[[torch.nn.Module, set[str]], Explainers],
                       rankers: Mapping[str, Ranker], sheets: BackgroundWorker | None) -> Iterator[ProposedImage]:
    """`proposed_images` of the run's baseline (`augment.checkpoint`) over `augment.split`, as
    stage=augment and stage=budget run it: `cfg` is the run's config (read only: `augment.*`,
    `data.{processed_dir, image_size}`, `device`), `xai` the `xai` group of method `method_name`
    (its precision settings), `explainers(model, needs)` builds the CAMs
    (`vqi.config.proposal_explainers`)."""
    a = cfg.augment
    processed = Path(cfg.data.processed_dir)
    device = resolve_device(cfg.device)
    precision = Precision.of(xai)
    model, ckpt = load_model(a.checkpoint, device)
    model = precision.prepare(model, device)
    names = list(ckpt["class_names"])
    missing = [c for c in a.thin_classes if c not in names]
    if missing:  # before any CAM is built, as before
        raise ValueError(f"augment.thin_classes: {missing} not among the model's classes {names}")
    built = explainers(model, evidence_needs(rankers, sheets is not None))
    entries = {Path(img["file_name"]).stem: anns for img, anns in iter_image_annotations(read_split(processed, a.split))}
    return proposed_images(model, names, device, precision, built, processed_dir=processed, split=str(a.split),
                           image_size=int(cfg.data.image_size), batch_size=int(a.batch_size), entries=entries,
                           thin_classes=list(a.thin_classes), enlarge=EnlargeRule(**a.enlarge),
                           unlabelled=UnlabelledRule(**a.unlabelled), rankers=rankers, sheets=sheets,
                           review_dir=Path(a.review_dir), desc=f"augment: explain ({method_name})")
