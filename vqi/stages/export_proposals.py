"""stage=export_proposals: the review file's proposals for an annotation tool (vqi.review.exchange).

Reads: `exchange.review_file`, `exchange.split` of `data.processed_dir`, `exchange.dir`,
`exchange.formats` (coco, label_studio), `exchange.segmentation`, `exchange.include_annotations`,
`exchange.only_pending`, `exchange.image_url`.

Writes into `exchange.dir`: `proposals_coco.json` (COCO: the images with proposals, their
annotations and one annotation per proposal) and, for Label Studio, `label_studio_tasks.json` and
`label_studio_config.xml`. Images are not copied: the COCO `file_name`s are relative to
`<data.processed_dir>/images/<split>/`. Decisions come back with stage=import_decisions.
"""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from vqi.review import exchange
from vqi.review.file import read_review
from vqi.data.dataset import read_mask, read_split
from vqi.utils.atomic import write_json, write_text

log = logging.getLogger(__name__)
FORMATS = ("coco", "label_studio")


def run_name(cfg: DictConfig) -> str:
    return f"export_proposals-{cfg.experiment_name}"


def run(cfg: DictConfig) -> dict[str, float]:
    x = cfg.exchange
    formats = [str(f) for f in x.formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"exchange.formats: unknown {unknown}; valid: {', '.join(FORMATS)}")
    review_file = Path(x.review_file)
    if not review_file.is_file():
        raise FileNotFoundError(f"exchange.review_file: {review_file} does not exist (run stage=augment first)")
    proposals = read_review(review_file)
    if x.only_pending:
        proposals = [p for p in proposals if p.decision == "pending"]
    processed = Path(cfg.data.processed_dir)
    split = read_split(processed, str(x.split))
    shapes = {Path(img["file_name"]).stem: (img["height"], img["width"]) for img in split["images"]}
    masks = processed / "masks" / str(x.split)
    coco = exchange.to_coco(proposals, split, lambda stem: read_mask(masks / f"{stem}.png", shapes[stem]),
                            str(x.segmentation), bool(x.include_annotations))
    out = Path(x.dir)
    written = [out / "proposals_coco.json"]
    write_json(written[0], coco)
    if "label_studio" in formats:
        tasks = exchange.label_studio_tasks(proposals, coco, str(x.image_url))
        write_json(out / "label_studio_tasks.json", tasks)
        write_text(out / "label_studio_config.xml", exchange.label_studio_config(c["name"] for c in coco["categories"]))
        written += [out / "label_studio_tasks.json", out / "label_studio_config.xml"]
    for path in written:
        mlflow.log_artifact(str(path), "exchange")
    log.info("export_proposals: %d proposals on %d images -> %s (images: %s)", len(proposals),
             len(coco["images"]), ", ".join(p.name for p in written), processed / "images" / str(x.split))
    return {"proposals_exported": float(len(proposals)), "images_exported": float(len(coco["images"]))}
