"""Writing the prepared dataset folder (docs/architecture.md, "The prepared dataset").

The folder is built in a temporary sibling and renamed into place at the end
(`vqi.utils.atomic.atomic_dir`), with `fingerprint.txt` written last: a folder that exists under
its final name is complete, and a rerun whose fingerprint matches reuses it. Temporary siblings
carry their process's pid and host in their name (`.<name>.tmp-<pid>.<start>@<host>-*`); a later
build removes those whose process is gone (killed with -9), as each can hold a whole dataset.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
from PIL import Image
from vqi.utils.progress import progress as progress_bar

from vqi.classes import CLASS_NAMES, IGNORE_INDEX, TRUTH_CLASS_IDS
from vqi.data.coco import VOID_MODES, coco_document, scaled_annotations
from vqi.data.label_quality import LabelIoU
from vqi.data.labelme import TruthFolder
from vqi.data.rasterize import rasterize
from vqi.data.records import VOID, DataError, Sample
from vqi.utils import atomic

FORMAT_VERSION = "1"
"""Bump when the prepared layout or its content rules change, so old folders are rebuilt."""

PIXEL_NAMES = {**dict(enumerate(CLASS_NAMES)), IGNORE_INDEX: "ignore"}
INSTANCE_NAMES = {**dict(enumerate(CLASS_NAMES)), IGNORE_INDEX: VOID}

remove_stale_siblings = atomic.remove_stale_siblings


class Source(Protocol):
    def stems(self) -> list[str]: ...
    def input_files(self) -> list[Path]: ...
    def load(self, stem: str) -> Sample: ...


def fingerprint(files: Iterable[Path], settings: dict) -> str:
    """Hash of the settings and of every input file's name and content."""
    digest = hashlib.sha256(f"vqi-prepared-v{FORMAT_VERSION}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(f"\n{Path(path).name}\n".encode())
        with open(path, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()[:24]


def current_fingerprint(out_dir: Path) -> str | None:
    path = Path(out_dir) / "fingerprint.txt"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def check_outside(out_dir: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output folder that is, holds or sits inside a folder of the inputs."""
    out = Path(out_dir).resolve()
    for folder in {Path(p).resolve().parent for p in inputs}:
        if out == folder or folder in out.parents or out in folder.parents:
            raise ValueError(f"data.processed_dir {out} overlaps the input folder {folder}; "
                             "the raw data is never written to")


def _split_stats(masks_hist: np.ndarray, instances: Counter, images: int) -> dict:
    total = int(masks_hist.sum())
    return {
        "images": images,
        "instances": {INSTANCE_NAMES[c]: int(instances.get(c, 0)) for c in [*range(1, len(CLASS_NAMES)), IGNORE_INDEX]},
        "pixel_share": {PIXEL_NAMES[c]: (float(masks_hist[c]) / total if total else 0.0)
                        for c in [*range(len(CLASS_NAMES)), IGNORE_INDEX]},
    }


def build(source: Source, assignment: dict[str, str], out_dir: str | Path, image_size: int, void: str = "ignore",
          on_error: str = "skip", skipped: list[dict] | None = None, fingerprint_value: str = "",
          description: str = "", progress: Callable = progress_bar, truth: TruthFolder | None = None) -> dict:
    """Convert every assigned record and write the prepared folder; return the summary.

    `assignment` maps record stems to splits; `skipped` holds records already excluded (e.g.
    not in any split list). `on_error="skip"` records a `DataError` in the summary and goes on;
    `"fail"` raises it. With `truth` (generated data), the true masks go to `masks_truth/<split>/`
    (5 = distractor) and the summary holds each split's label IoU against them.
    """
    if void not in VOID_MODES:
        raise ValueError(f"data.void: expected one of {VOID_MODES}, got {void!r}")
    if on_error not in ("skip", "fail"):
        raise ValueError(f"data.on_error: expected 'skip' or 'fail', got {on_error!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    skipped = list(skipped or [])
    splits = sorted(set(assignment.values()), key=["train", "val", "test"].index)
    images = {s: [] for s in splits}
    annotations = {s: [] for s in splits}
    hist = {s: np.zeros(256, np.int64) for s in splits}
    instances = {s: Counter() for s in splits}
    label_iou = {s: LabelIoU() for s in splits}
    with atomic.atomic_dir(out_dir) as tmp:
        for stem in progress(sorted(assignment), desc=f"preparing {out_dir.name}", unit="img"):
            split = assignment[stem]
            try:
                sample = source.load(stem)
                true_shapes = truth.shapes(stem) if truth is not None else None
            except DataError as err:
                if on_error == "fail":
                    raise
                skipped.append({"file": Path(err.file).name, "field": err.field, "reason": err.reason})
                continue
            if void == "drop" and any(s.label == VOID for s in sample.shapes):
                skipped.append({"file": sample.source.name, "field": "shapes",
                                "reason": "holds void shapes (data.void=drop)"})
                continue
            image_id = len(images[split]) + 1
            anns = scaled_annotations(sample, image_size, void, image_id, len(annotations[split]) + 1)
            mask = rasterize(anns, image_size, image_size)
            resized = Image.fromarray(sample.image).resize((image_size, image_size), Image.Resampling.BILINEAR)
            pictures = [("images", resized), ("masks", Image.fromarray(mask, mode="L"))]
            if true_shapes is not None:
                true_sample = Sample(stem, true_shapes[0], sample.image, true_shapes[1])
                true_mask = rasterize(scaled_annotations(true_sample, image_size, void, image_id, 1, TRUTH_CLASS_IDS),
                                      image_size, image_size)
                pictures.append(("masks_truth", Image.fromarray(true_mask, mode="L")))
                label_iou[split].update(mask, true_mask)
            for kind, picture in pictures:
                (tmp / kind / split).mkdir(parents=True, exist_ok=True)
                picture.save(tmp / kind / split / f"{stem}.png")
            images[split].append({"id": image_id, "file_name": f"{split}/{stem}.png", "width": image_size,
                                  "height": image_size, "source": sample.source.name})
            annotations[split].extend(anns)
            hist[split] += np.bincount(mask.ravel(), minlength=256)
            instances[split].update(a["category_id"] for a in anns)
        if not any(images.values()):
            reasons = "; ".join(f"{s['file']}: {s['field']}: {s['reason']}" for s in skipped[:5])
            raise ValueError(f"no usable image among {len(assignment)} records ({len(skipped)} skipped: {reasons})")
        for split in splits:
            atomic.write_json(tmp / "annotations" / f"{split}.json",
                              coco_document(images[split], annotations[split], void, f"{description} {split}"))
        summary = {
            "description": description, "image_size": image_size, "void": void, "fingerprint": fingerprint_value,
            "splits": {s: _split_stats(hist[s], instances[s], len(images[s])) for s in splits},
            "total": _split_stats(sum(hist.values()), sum(instances.values(), Counter()),
                                  sum(len(v) for v in images.values())),
            "skipped_count": len(skipped), "skipped": skipped, "truth": truth is not None,
        }
        if truth is not None:
            summary["label_iou"] = {s: label_iou[s].metrics() for s in splits}
        atomic.write_json(tmp / "summary.json", summary)
        atomic.write_text(tmp / "fingerprint.txt", fingerprint_value + "\n")
    return summary


def ensure(source: Source, assignment: dict[str, str], out_dir: str | Path, settings: dict, force: bool = False,
           **build_kwargs) -> tuple[dict, bool]:
    """Reuse `out_dir` when its fingerprint matches the inputs and `settings`, else (or with
    `force`) build it. Returns (summary, reused)."""
    truth = build_kwargs.get("truth")
    inputs = source.input_files() + (truth.input_files() if truth is not None else [])
    check_outside(Path(out_dir), inputs)
    remove_stale_siblings(out_dir)
    value = fingerprint(inputs, settings)
    if not force and current_fingerprint(Path(out_dir)) == value:
        return read_summary(out_dir), True
    return build(source, assignment, out_dir, fingerprint_value=value, **build_kwargs), False


def read_summary(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "summary.json").read_text(encoding="utf-8"))


def summary_metrics(summary: dict) -> dict[str, float]:
    """Key numbers of a summary as flat metrics (images per split, skipped, instances, shares)."""
    metrics: dict[str, float] = {f"images_{s}": v["images"] for s, v in summary["splits"].items()}
    metrics["images_total"] = summary["total"]["images"]
    metrics["skipped"] = summary["skipped_count"]
    metrics.update({f"instances_{k}": v for k, v in summary["total"]["instances"].items()})
    metrics.update({f"pixel_share_{k}": v for k, v in summary["total"]["pixel_share"].items()})
    for split, ious in summary.get("label_iou", {}).items():  # annotation against truth
        metrics.update({f"label_{k}/{split}": v for k, v in ious.items()})
    return metrics
