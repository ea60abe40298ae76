"""Stage `prepare`: raw dataset (labelme folder, COCO file, or the generated default) ->
the prepared folder of docs/architecture.md, reused when its fingerprint matches.

Config keys read: data.generator (optional, instantiated first), data.source (the reader),
data.processed_dir, data.image_size, data.void, data.on_error, data.force, data.split_files,
data.test_fraction, data.val_fraction, data.split_seed, data.class_map, data.point_tolerance,
data.preview_images, data.name, data.truth_dir (optional: true shapes -> masks_truth/).
Logs: summary.json and preview.png as artifacts under `prepare/`, key counts as metrics.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from vqi.data import prepared
from vqi.data.coco import read_annotations
from vqi.data.labelme import truth_folder
from vqi.data.splits import assign_listed, random_split, read_split_files
from vqi.utils import atomic
from vqi.viz.preview import save_preview

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig) -> str:
    return f"prepare-{cfg.data.name}-{cfg.data.image_size}"


def _splits(cfg: DictConfig, stems: list[str]) -> tuple[dict[str, str], list[dict], dict]:
    """(stem -> split, records left out, how the split was made)."""
    data = cfg.data
    if data.split_files:
        folder = Path(data.split_files)
        lists = read_split_files(folder)
        assignment, unlisted, absent = assign_listed(stems, lists)
        log.info("split lists %s: %d records assigned, %d in no list, %d listed names not in this folder",
                 folder, len(assignment), len(unlisted), absent)
        left_out = [{"file": s, "field": "split_files", "reason": f"not listed in any split file in {folder}"}
                    for s in unlisted]
        files = sorted(folder.glob("*.txt"))
        return assignment, left_out, {"split_files": [p.read_text(encoding="utf-8") for p in files]}
    assignment = random_split(stems, float(data.test_fraction), float(data.val_fraction), int(data.split_seed))
    return assignment, [], {"test_fraction": data.test_fraction, "val_fraction": data.val_fraction,
                            "split_seed": data.split_seed}


def _preview(out_dir: Path, count: int, target: Path) -> Path | None:
    """Save `image | overlay` rows for the first `count` images of the first split."""
    for split in ("train", "val", "test"):
        ann_path = out_dir / "annotations" / f"{split}.json"
        if ann_path.is_file() and (entries := read_annotations(ann_path)["images"][:count]):
            images = [np.asarray(Image.open(out_dir / "images" / e["file_name"]).convert("RGB")) for e in entries]
            masks = [np.asarray(Image.open(out_dir / "masks" / split / f"{Path(e['file_name']).stem}.png"))
                     for e in entries]
            return save_preview(target, images, masks, [e["file_name"] for e in entries],
                                title=f"{out_dir.name}: the first {len(entries)} '{split}' images and their masks")
    return None


def run(cfg: DictConfig) -> dict[str, float]:
    data = cfg.data
    if data.get("generator"):
        if data.generator.get("out_dir"):  # what a generator killed with -9 left beside its folder
            atomic.remove_stale_siblings(Path(data.generator.out_dir))
        log.info("generated dataset: %s", instantiate(data.generator))
    source = instantiate(data.source, _convert_="all")
    stems = source.stems()
    if not stems:
        raise FileNotFoundError(f"data.source: no records found ({OmegaConf.to_container(data.source, resolve=True)})")
    out_dir = Path(data.processed_dir)
    assignment, left_out, split_settings = _splits(cfg, stems)
    settings = {"image_size": int(data.image_size), "void": data.void, "on_error": data.on_error,
                "class_map": OmegaConf.to_container(data.class_map), "point_tolerance": data.point_tolerance,
                "source": data.source._target_, **split_settings}
    truth = truth_folder(data.get("truth_dir"), data.class_map, data.point_tolerance)
    summary, reused = prepared.ensure(source, assignment, out_dir, settings, force=bool(data.force),
                                      image_size=int(data.image_size), void=data.void, on_error=data.on_error,
                                      skipped=left_out, description=str(data.name), truth=truth)
    if reused:
        log.info("prepared dataset %s is up to date (fingerprint %s): reused", out_dir, summary["fingerprint"])
    else:
        log.info("prepared %s: %s images, %d skipped", out_dir,
                 {s: v["images"] for s, v in summary["splits"].items()}, summary["skipped_count"])
    mlflow.set_tags({"prepare_reused": str(reused).lower(), "truth": str(summary.get("truth", False)).lower()})
    for split, ious in summary.get("label_iou", {}).items():
        log.info("label IoU of %s against truth: %s", split, ", ".join(f"{k} {v:.3f}" for k, v in ious.items()))
    for item in summary["skipped"]:
        log.warning("skipped %s: %s: %s", item["file"], item["field"], item["reason"])
    mlflow.log_artifact(str(out_dir / "summary.json"), artifact_path="prepare")
    with tempfile.TemporaryDirectory() as tmp:
        figure = _preview(out_dir, int(data.preview_images), Path(tmp) / "preview.png")
        if figure is not None:
            mlflow.log_artifact(str(figure), artifact_path="prepare")
    return prepared.summary_metrics(summary)
