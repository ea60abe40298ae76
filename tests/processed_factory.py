"""Writes a tiny prepared dataset in the format of docs/architecture.md, for training tests.

Thin bright lines are cables, solid coloured blocks are towers (one colour per tower class),
on a noisy background; a few pixels are void (255). Polygons in the COCO files match the masks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vqi.classes import CLASS_NAMES, FOREGROUND_IDS, IGNORE_INDEX

TOWER_COLOURS = {2: (200, 60, 40), 3: (40, 160, 60), 4: (120, 80, 30)}


def _sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, list[float]]]]:
    image = Image.fromarray(rng.integers(40, 110, (size, size, 3), dtype=np.uint8))
    mask = Image.new("L", (size, size), 0)
    draw_i, draw_m = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    shapes: list[tuple[int, list[float]]] = []
    for cls in rng.choice([2, 3, 4], size=int(rng.integers(1, 3)), replace=False):
        w, h = int(rng.integers(size // 8, size // 4)), int(rng.integers(size // 4, size // 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        draw_i.polygon(poly, fill=TOWER_COLOURS[int(cls)])
        draw_m.polygon(poly, fill=int(cls))
        shapes.append((int(cls), [float(v) for v in poly]))
    for _ in range(int(rng.integers(1, 4))):
        y0, y1 = (int(v) for v in rng.integers(0, size, 2))
        t = max(1, size // 64)
        poly = [0, y0 - t, size, y1 - t, size, y1 + t, 0, y0 + t]
        draw_i.polygon(poly, fill=(235, 235, 235))
        draw_m.polygon(poly, fill=1)
        shapes.append((1, [float(v) for v in poly]))
    x, y = (int(v) for v in rng.integers(0, size - 4, 2))
    draw_m.rectangle([x, y, x + 3, y + 3], fill=IGNORE_INDEX)
    shapes.append((IGNORE_INDEX, [x, y, x + 3, y, x + 3, y + 3, x, y + 3]))
    return np.asarray(image), np.asarray(mask), shapes


def write_processed(root: str | Path, splits: dict[str, int] | None = None, size: int = 64,
                    seed: int = 0) -> Path:
    """Write `root` as a prepared folder with `splits` (name -> image count); return `root`."""
    root = Path(root)
    splits = splits or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    categories = [{"id": i, "name": CLASS_NAMES[i], "supercategory": "ttpla"} for i in FOREGROUND_IDS]
    categories.append({"id": IGNORE_INDEX, "name": "void", "supercategory": "ignore"})
    summary: dict[str, dict[str, int]] = {}
    for split, count in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(count):
            stem = f"{split}_{i:03d}"
            image, mask, shapes = _sample(rng, size)
            Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{stem}.png")
            images.append({"id": i + 1, "file_name": f"{split}/{stem}.png", "width": size, "height": size})
            for cls, poly in shapes:
                xs, ys = poly[0::2], poly[1::2]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls,
                             "segmentation": [poly], "iscrowd": 0,
                             "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                             "area": float((max(xs) - min(xs)) * (max(ys) - min(ys)))})
        (root / "annotations").mkdir(exist_ok=True)
        doc = {"info": {"description": "test factory"}, "images": images, "annotations": anns,
               "categories": categories}
        (root / "annotations" / f"{split}.json").write_text(json.dumps(doc))
        summary[split] = {"images": count}
    (root / "summary.json").write_text(json.dumps(summary))
    key = json.dumps({"splits": splits, "size": size, "seed": seed}, sort_keys=True)
    (root / "fingerprint.txt").write_text(hashlib.sha256(key.encode()).hexdigest() + "\n")
    return root
