"""An uploaded labelme or COCO annotation as a ground-truth mask at the model's input size.

The upload is read by the data layer's own readers (`LabelmeFolder`, `CocoFile`), exactly as
stage=prepare reads a dataset, from a private scratch folder that is removed right after.
Errors name the uploaded file and the field that is wrong.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from vqi.classes import FOREGROUND_IDS
from vqi.data.coco import CocoFile, scaled_annotations
from vqi.data.labelme import LabelmeFolder
from vqi.data.records import DataError, Sample
from vqi.data.rasterize import rasterize
from vqi.metrics.boxes import box_masks
from vqi.review.safety import BadInput, parse_json

STEM = "upload"


@dataclass(frozen=True)
class GroundTruth:
    """Class-index mask (H x W uint8, 255 ignore) and, per class id, its box region B_c (H x W bool),
    at the model's input size (what the scores use); `display`: the mask at the size the page
    shows the image (rasterised from the same polygons, not upscaled)."""

    mask: np.ndarray
    boxes: dict[int, np.ndarray]
    display: np.ndarray | None = None


def _format(doc: object, name: str) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
        return "labelme"
    if isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        return "coco"
    raise BadInput(f"annotation {name!r}: neither labelme (a `shapes` list) nor COCO "
                   f"(`images`, `annotations`, `categories` lists)")


def _coco_entry(doc: dict, image_name: str, name: str) -> dict:
    """The COCO image entry of the upload: by file name, or the only one."""
    images = [img for img in doc["images"] if isinstance(img, dict)]
    stem = Path(image_name).stem
    matches = [img for img in images if isinstance(img.get("file_name"), str)
               and Path(img["file_name"].replace("\\", "/")).stem == stem]
    if len(matches) == 1:
        return matches[0]
    if len(images) == 1:
        return images[0]
    raise BadInput(f"annotation {name!r}: field 'images': no single entry whose file_name matches "
                   f"{image_name!r} ({len(images)} images listed)")


def _read_sample(image_bytes: bytes, annotation: bytes, name: str, image_name: str,
                 class_map: Mapping[str, str], tolerance: float, work_dir: Path) -> Sample:
    doc = parse_json(annotation, f"annotation {name!r}")
    kind = _format(doc, name)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="upload-") as scratch:
        folder = Path(scratch)
        try:
            if kind == "labelme":
                doc["imagePath"] = f"{STEM}.img"
                (folder / f"{STEM}.json").write_text(json.dumps(doc), encoding="utf-8")
                (folder / f"{STEM}.img").write_bytes(image_bytes)
                return LabelmeFolder(folder, class_map, point_tolerance=tolerance).load(STEM)
            entry = _coco_entry(doc, image_name, name)
            doc["images"] = [{**entry, "file_name": f"{STEM}.img"}]
            (folder / "annotations.json").write_text(json.dumps(doc), encoding="utf-8")
            (folder / f"{STEM}.img").write_bytes(image_bytes)
            return CocoFile(folder / "annotations.json", folder, class_map, tolerance).load(STEM)
        except DataError as err:
            raise BadInput(f"annotation {name!r}: field {err.field}: {err.reason}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise BadInput(f"annotation {name!r}: malformed {kind} document ({type(err).__name__}: {err})") from None


def ground_truth(image_bytes: bytes, annotation: bytes, name: str, image_name: str, size: int,
                 class_map: Mapping[str, str], void: str, tolerance: float, work_dir: str | Path,
                 display_hw: tuple[int, int] | None = None) -> GroundTruth:
    """Parse `annotation` (bytes of the file called `name`) for the uploaded image, scale to `size`
    (and, for the page, to `display_hw` = (height, width))."""
    sample = _read_sample(image_bytes, annotation, name, image_name, {str(k).lower(): str(v) for k, v in
                          class_map.items()}, tolerance, Path(work_dir))
    anns = scaled_annotations(sample, size, void, image_id=1, first_id=1)
    display = None
    if display_hw is not None:
        height, width = display_hw
        display = rasterize(scaled_annotations(sample, width, void, image_id=1, first_id=1, height=height),
                            height, width)
    return GroundTruth(rasterize(anns, size, size), box_masks(anns, size, size, FOREGROUND_IDS), display)
