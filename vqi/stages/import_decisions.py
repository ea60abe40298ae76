"""stage=import_decisions: the expert's decisions from an annotation tool into the review file.

Reads: `exchange.file` (a COCO file from stage=export_proposals as the expert returned it, or a
Label Studio JSON export of its tasks), `exchange.review_file`, `exchange.unmarked`,
`exchange.k_max` (augment.enlarge.k_max).

A proposal whose annotation the expert deleted is rejected; a kept one is accepted or rejected by
its `attributes.decision`/`accepted` mark, else by `exchange.unmarked`, and an unlabelled region
takes the label its category names (vqi.review.exchange). A bad field anywhere in the file
refuses it whole, naming the file, the record and the field; the review file is then untouched.
Proposals of images not in the file are left alone. Decisions are recorded as the expert's
(`decided_by=expert`); the review file is edited under the review page's lock, so an open review
page loses nothing. Then `stage=augment` applies them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from vqi.review import exchange
from vqi.review.store import EXPERT, ReviewStore

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"import_decisions-{cfg.experiment_name}"


def run(cfg: DictConfig) -> dict[str, float]:
    x = cfg.exchange
    source = Path(x.file)
    if not source.is_file():
        raise FileNotFoundError(f"exchange.file: {source} does not exist")
    doc = exchange.load_document(source)
    review_file = Path(x.review_file)
    if not review_file.is_file():
        raise FileNotFoundError(f"exchange.review_file: {review_file} does not exist (run stage=augment first)")

    def change(proposals):
        if isinstance(doc, list):
            decisions = exchange.decisions_from_label_studio(doc, proposals, str(source), str(x.unmarked))
        else:
            decisions = exchange.decisions_from_coco(doc, proposals, str(source), str(x.unmarked), int(x.k_max))
        return decisions, exchange.apply_decisions(proposals, decisions, EXPERT)

    decisions, changed = ReviewStore(review_file).edit(change)
    counts = {d: sum(v.decision == d for v in decisions.values()) for d in ("accept", "reject", "pending")}
    mlflow.log_artifact(str(source), "exchange")
    log.info("import_decisions: %d proposals read from %s (%d accepted, %d rejected, %d pending); %d rows of %s "
             "changed. Apply them with stage=augment", len(decisions), source.name, counts["accept"],
             counts["reject"], counts["pending"], changed, review_file)
    return {"decisions_read": float(len(decisions)), "rows_changed": float(changed),
            **{f"decisions_{k}": float(v) for k, v in counts.items()}}
