"""The example rows of the cross-run figures: every method's map of one image per class (the
paper's Fig. 3) and the original vs the enhanced model's predictions (the paper's Fig. 6).
Plain folders, checkpoints and models in; rows for `vqi.reporting.figures` out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from vqi.classes import CLASS_NAMES, FOREGROUND_IDS
from vqi.data.dataset import read_mask, read_split
from vqi.engine.confusion import ConfusionMatrix
from vqi.engine.train_loop import predict
from vqi.xai.maps import load_maps


def _image_and_mask(processed_dir: Path, split: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.array(Image.open(processed_dir / "images" / split / f"{stem}.png").convert("RGB"))
    return rgb, read_mask(processed_dir / "masks" / split / f"{stem}.png", rgb.shape[:2])


def methods_rows(processed_dir: str | Path, split: str, maps_dir: str | Path,
                 methods: Sequence[tuple[str, str]]) -> list[dict]:
    """One row per foreground class that every method explained on some image of `split`: the
    image where that class has the most ground-truth pixels, with each `(method, label)`'s map of
    it. Rows for `save_methods_figure`."""
    processed_dir, maps_dir = Path(processed_dir), Path(maps_dir)
    stems = [Path(img["file_name"]).stem for img in read_split(processed_dir, split)["images"]]
    explained = {}
    for stem in stems:
        files = [maps_dir / method / f"{stem}.npz" for method, _ in methods]
        if all(f.is_file() for f in files):
            explained[stem] = [load_maps(f) for f in files]
    rows = []
    for class_id in FOREGROUND_IDS:
        name = CLASS_NAMES[class_id]
        best, best_area = None, 0
        for stem, maps in explained.items():
            if all(name in m for m in maps):
                area = int((_image_and_mask(processed_dir, split, stem)[1] == class_id).sum())
                if area > best_area:
                    best, best_area = stem, area
        if best is None:
            continue
        rgb, mask = _image_and_mask(processed_dir, split, best)
        rows.append({"label": f"{best}\n{name}", "rgb": rgb, "gt": np.where(mask == class_id, mask, 0),
                     "maps": [(lab, m[name]) for (_, lab), m in zip(methods, explained[best])]})
    return rows


def _image_iou(mask: torch.Tensor, pred: torch.Tensor) -> float:
    """The image's Overall IoU: mean over the foreground classes present in mask or prediction."""
    cm = ConfusionMatrix(len(CLASS_NAMES))
    cm.update(mask.unsqueeze(0), pred.unsqueeze(0))
    return cm.metrics()["iou_overall"]


def before_after_rows(dataset: Iterable, original: torch.nn.Module, enhanced: torch.nn.Module,
                      device: torch.device, to_rgb, count: int = 4) -> list[dict]:
    """The `count` images of `dataset` ((image, mask, stem) items, eval-transformed) whose
    predictions differ most between the two models, in dataset order, each with its image-level
    Overall IoU under both. Rows for `save_before_after_figure`."""
    scored = []
    for image, mask, stem in dataset:
        before = predict(original, image.unsqueeze(0), device)[0].cpu()
        after = predict(enhanced, image.unsqueeze(0), device)[0].cpu()
        scored.append((int((before != after).sum()), stem, image, mask, before, after))
    chosen = sorted(sorted(scored, key=lambda s: -s[0])[:count], key=lambda s: s[1])
    rows = []
    for _, stem, image, mask, before, after in chosen:
        rows.append({"label": stem, "rgb": to_rgb(image), "gt": mask.numpy(), "original": before.numpy(),
                     "enhanced": after.numpy(),
                     "original_note": f"\nthis image's Overall IoU {_percent(_image_iou(mask, before))}",
                     "enhanced_note": f"\nthis image's Overall IoU {_percent(_image_iou(mask, after))}"})
    return rows


def _percent(value: float) -> str:
    return "–" if value != value else f"{100 * value:.1f}%"
