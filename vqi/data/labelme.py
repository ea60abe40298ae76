"""Reading TTPLA as it ships: a folder of labelme JSON files with their images.

The project's own reader (not the `labelme` package). It never decodes `imageData` (TTPLA's is
stale: the original 3840x2160 JPEG) and takes the size from `imageWidth`/`imageHeight`.
Labels are lower-cased (`Cable` is `cable`) and mapped through a class map.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from vqi.classes import DISTRACTOR_NAME
from vqi.data.records import DataError, Sample, Shape, check_polygon, find_image, load_rgb, map_label


def _positive_int(doc: dict, key: str, file: Path) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(file, key, f"expected a positive integer, got {value!r}")
    return value


def read_labelme_json(path: Path, class_map: Mapping[str, str], tolerance: float) -> tuple[dict, tuple[Shape, ...]]:
    """Parse and validate one labelme file; return the document and its shapes (source pixels)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, "<file>", f"cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(path, "<json>", f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(doc, dict):
        raise DataError(path, "<json>", "expected a JSON object at the top level")
    width, height = _positive_int(doc, "imageWidth", path), _positive_int(doc, "imageHeight", path)
    shapes_in = doc.get("shapes")
    if not isinstance(shapes_in, list):
        raise DataError(path, "shapes", f"expected a list, got {type(shapes_in).__name__}")
    shapes = []
    for i, shape in enumerate(shapes_in):
        where = f"shapes[{i}]"
        if not isinstance(shape, dict):
            raise DataError(path, where, "expected an object")
        kind = shape.get("shape_type") or "polygon"
        if kind != "polygon":
            raise DataError(path, f"{where}.shape_type", f"only 'polygon' is supported, got {kind!r}")
        label = map_label(shape.get("label"), class_map, path, f"{where}.label")
        polygon = check_polygon(shape.get("points"), width, height, tolerance, path, f"{where}.points")
        shapes.append(Shape(label, (polygon,)))
    return doc, tuple(shapes)


class LabelmeFolder:
    """A folder of labelme JSON files; images in `images_dir` (default: beside the labels)."""

    def __init__(self, labels_dir: str | Path, class_map: Mapping[str, str],
                 images_dir: str | Path | None = None, point_tolerance: float = 2.0):
        self.labels_dir = Path(labels_dir)
        self.images_dir = Path(images_dir) if images_dir else self.labels_dir
        self.class_map = {str(k).lower(): str(v) for k, v in class_map.items()}
        self.tolerance = float(point_tolerance)
        if not self.labels_dir.is_dir():
            raise FileNotFoundError(f"data.labels_dir: no folder {self.labels_dir}")
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"data.images_dir: no folder {self.images_dir}")

    def stems(self) -> list[str]:
        """Every record, by file stem, in a stable order."""
        return sorted(p.stem for p in self.labels_dir.glob("*.json"))

    def input_files(self) -> list[Path]:
        """Every file whose content decides the prepared dataset (for the fingerprint)."""
        stems = set(self.stems())
        images = {p for p in self.images_dir.iterdir() if p.is_file() and p.stem in stems}
        return sorted(set(self.labels_dir.glob("*.json")) | images)

    def load(self, stem: str) -> Sample:
        path = self.labels_dir / f"{stem}.json"
        doc, shapes = read_labelme_json(path, self.class_map, self.tolerance)
        hint = doc.get("imagePath") if isinstance(doc.get("imagePath"), str) else None
        image_path = find_image(self.images_dir, hint, stem, path, "imagePath")
        image = load_rgb(image_path, (doc["imageWidth"], doc["imageHeight"]), path, "imageWidth/imageHeight")
        return Sample(stem, path, image, shapes)


class TruthFolder:
    """The true shapes of a generated dataset: one labelme file per record (`truth/<stem>.json`),
    read with the annotation's class map plus `distractor`. Real datasets have none."""

    def __init__(self, truth_dir: str | Path, class_map: Mapping[str, str], point_tolerance: float = 2.0):
        self.truth_dir = Path(truth_dir)
        self.class_map = {**{str(k).lower(): str(v) for k, v in class_map.items()}, DISTRACTOR_NAME: DISTRACTOR_NAME}
        self.tolerance = float(point_tolerance)

    def input_files(self) -> list[Path]:
        return sorted(self.truth_dir.glob("*.json"))

    def shapes(self, stem: str) -> tuple[Path, tuple[Shape, ...]]:
        """(file, true shapes) of one record; a missing file is a DataError naming it."""
        path = self.truth_dir / f"{stem}.json"
        if not path.is_file():
            raise DataError(path, "<file>", f"no truth file for record {stem!r} in {self.truth_dir}")
        return path, read_labelme_json(path, self.class_map, self.tolerance)[1]


def truth_folder(truth_dir: str | Path | None, class_map: Mapping[str, str],
                 point_tolerance: float = 2.0) -> TruthFolder | None:
    """The truth beside a dataset when `truth_dir` names an existing folder, else None."""
    return TruthFolder(truth_dir, class_map, point_tolerance) if truth_dir and Path(truth_dir).is_dir() else None
