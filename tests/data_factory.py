"""Small labelme datasets written by tests: real files, TTPLA's layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_MAP = {k: k for k in ("cable", "tower_lattice", "tower_tucohy", "tower_wooden", "void")}


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def write_labelme(folder: Path, stem: str, shapes: list[tuple[str, list]], size=(100, 80), image: bool = True,
                  image_size=None, version: str = "4.5.6", image_data=None) -> Path:
    """Write `<stem>.json` (+ `<stem>.jpg` of `image_size` or `size`) and return the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    doc = {"version": version, "flags": {},
           "shapes": [{"label": label, "points": pts, "group_id": None, "shape_type": "polygon", "flags": {}}
                      for label, pts in shapes],
           "imagePath": f"{stem}.jpg", "imageData": image_data, "imageHeight": h, "imageWidth": w}
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(doc))
    if image:
        iw, ih = image_size or size
        pixels = np.random.default_rng(len(stem)).integers(0, 255, (ih, iw, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{stem}.jpg")
    return path


def tree_digest(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime_ns) of every file below `folder`: a folder nobody wrote to keeps it."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def generated_content(folder: Path) -> dict:
    """What a generated dataset holds, in terms no image library release changes: per labelme
    file (annotation and truth) its labels and points, and per image its size and the 8 x 8 grid
    of block means of its decoded pixels (a JPEG or resampling patch release moves them by a
    fraction of a grey level, a changed scene by many)."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        doc = json.loads(path.read_text())
        out[str(path.relative_to(folder))] = [[s["label"], s["points"]] for s in doc["shapes"]]
    for path in sorted(folder.glob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        h, w = pixels.shape
        blocks = pixels[: h // 8 * 8, : w // 8 * 8].reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3))
        out[path.name] = {"size": [w, h], "block_means": np.round(blocks, 2).tolist()}
    return out
