"""COCO both ways: reading a COCO dataset as a source, and writing the prepared annotations.

Written annotations hold polygons already scaled to the prepared image size, `bbox` as the
polygons' extent and `area` as the pixel count of pycocotools' rasterisation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from pycocotools import mask as mask_utils

from vqi.classes import CLASS_IDS, FOREGROUND_IDS, CLASS_NAMES, IGNORE_INDEX
from vqi.data.records import VOID, DataError, Sample, Shape, check_polygon, find_image, load_rgb, map_label

VOID_MODES = ("ignore", "background", "drop")
"""`ignore`: void shapes become category 255 (pixels ignored); `background`: void shapes are
left out (their pixels are background unless an object claims them); `drop`: images that hold
any void shape are skipped."""


def categories(void: str) -> list[dict]:
    cats = [{"id": i, "name": CLASS_NAMES[i], "supercategory": "ttpla"} for i in FOREGROUND_IDS]
    if void == "ignore":
        cats.append({"id": IGNORE_INDEX, "name": VOID, "supercategory": "ignore"})
    return cats


def scaled_annotations(sample: Sample, size: int, void: str, image_id: int, first_id: int,
                       class_ids: Mapping[str, int] = CLASS_IDS, height: int | None = None) -> list[dict]:
    """COCO annotations of one sample with its polygons scaled to `size` x `size` (or to `size`
    wide and `height` high when `height` is given)."""
    if void not in VOID_MODES:
        raise ValueError(f"data.void: expected one of {VOID_MODES}, got {void!r}")
    width, height = size, size if height is None else height
    scale = np.array([width / sample.width, height / sample.height])
    anns = []
    for shape in sample.shapes:
        if shape.label == VOID and void != "ignore":
            continue
        polys = [np.clip(p * scale, 0, [width, height]) for p in shape.polygons]
        flat = [[round(float(v), 3) for v in p.ravel()] for p in polys]
        rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
        pts = np.concatenate(polys)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        anns.append({
            "id": first_id + len(anns), "image_id": image_id,
            "category_id": IGNORE_INDEX if shape.label == VOID else class_ids[shape.label],
            "segmentation": flat, "area": float(mask_utils.area(rle)),
            "bbox": [round(float(x0), 3), round(float(y0), 3), round(float(x1 - x0), 3), round(float(y1 - y0), 3)],
            "iscrowd": 0,
        })
    return anns


def coco_document(images: list[dict], annotations: list[dict], void: str, description: str) -> dict:
    return {"info": {"description": description}, "images": images, "annotations": annotations,
            "categories": categories(void)}


class CocoFile:
    """A dataset already in COCO format: one annotation file with polygon segmentations, and
    its images; category names are mapped through a class map like labelme labels."""

    def __init__(self, annotation_file: str | Path, images_dir: str | Path, class_map: Mapping[str, str],
                 point_tolerance: float = 2.0):
        self.path = Path(annotation_file)
        self.images_dir = Path(images_dir)
        self.class_map = {str(k).lower(): str(v) for k, v in class_map.items()}
        self.tolerance = float(point_tolerance)
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as err:
            raise FileNotFoundError(f"data.annotation_file: cannot read {self.path} ({err})") from None
        except json.JSONDecodeError as err:
            raise DataError(self.path, "<json>", f"malformed JSON at line {err.lineno}: {err.msg}") from None
        except RecursionError:
            raise DataError(self.path, "<json>", "nested too deeply to be a COCO file") from None
        if not isinstance(doc, dict):
            raise DataError(self.path, "<json>", f"expected a COCO object, got a {type(doc).__name__}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(doc.get(key), list):
                raise DataError(self.path, key, "expected a list")
        self.category_names = {c.get("id"): c.get("name") for c in doc["categories"]}
        self.images: dict[str, dict] = {}
        for i, img in enumerate(doc["images"]):
            name = img.get("file_name") if isinstance(img, dict) else None
            if not isinstance(name, str):
                raise DataError(self.path, f"images[{i}].file_name", "expected a string")
            stem = Path(name.replace("\\", "/")).stem
            if stem in self.images:
                raise DataError(self.path, f"images[{i}].file_name", f"a second image with stem {stem!r}")
            self.images[stem] = img
        self.by_image: dict[object, list[tuple[int, dict]]] = {}
        for i, ann in enumerate(doc["annotations"]):
            if not isinstance(ann, dict):
                raise DataError(self.path, f"annotations[{i}]", f"expected an object, got {ann!r:.40}")
            self.by_image.setdefault(ann.get("image_id"), []).append((i, ann))

    def stems(self) -> list[str]:
        return sorted(self.images)

    def input_files(self) -> list[Path]:
        found = []
        for img in self.images.values():
            rel = img["file_name"].replace("\\", "/")
            found += [p for p in (self.images_dir / rel, self.images_dir / Path(rel).name) if p.is_file()][:1]
        return [self.path, *sorted(found)]

    def load(self, stem: str) -> Sample:
        img = self.images[stem]
        where = f"images[file_name={img['file_name']}]"
        width, height = img.get("width"), img.get("height")
        if not all(isinstance(v, int) and v > 0 for v in (width, height)):
            raise DataError(self.path, f"{where}.width/height", f"expected positive integers, got {width!r}, {height!r}")
        shapes = [self._shape(i, ann, width, height) for i, ann in self.by_image.get(img.get("id"), [])]
        image_path = find_image(self.images_dir, img["file_name"], stem, self.path, f"{where}.file_name")
        image = load_rgb(image_path, (width, height), self.path, f"{where}.width/height")
        return Sample(stem, self.path, image, tuple(shapes))

    def _shape(self, i: int, ann: dict, width: int, height: int) -> Shape:
        where = f"annotations[{i}]"
        name = self.category_names.get(ann.get("category_id"))
        if name is None:
            raise DataError(self.path, f"{where}.category_id", f"no category with id {ann.get('category_id')!r}")
        label = map_label(name, self.class_map, self.path, f"{where}.category_id")
        seg = ann.get("segmentation")
        if not isinstance(seg, list) or not seg:
            raise DataError(self.path, f"{where}.segmentation", "only polygon segmentations (a list of lists) are supported")
        polys = []
        for j, flat in enumerate(seg):
            if not isinstance(flat, list) or len(flat) % 2:
                raise DataError(self.path, f"{where}.segmentation[{j}]", "expected a flat list x1, y1, x2, y2, ...")
            points = np.asarray(flat, dtype=np.float64).reshape(-1, 2) if all(
                isinstance(v, (int, float)) for v in flat) else flat
            polys.append(check_polygon(points, width, height, self.tolerance, self.path, f"{where}.segmentation[{j}]"))
        return Shape(label, tuple(polys))


def read_annotations(path: Path) -> dict:
    """Load a prepared annotation file (`annotations/<split>.json`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def iter_image_annotations(doc: dict) -> Iterable[tuple[dict, list[dict]]]:
    """(image entry, its annotations) for every image of a COCO document, in file order."""
    by_image: dict[int, list[dict]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in doc["images"]:
        yield img, by_image.get(img["id"], [])
