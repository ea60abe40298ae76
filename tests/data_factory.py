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
