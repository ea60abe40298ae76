"""One uploaded image through a model: prediction, class areas, explanations, and (with ground
truth) that image's plausibility and faithfulness scores, timed, with PNG overlays."""
from __future__ import annotations

import base64
import io
import time
from typing import Callable

import albumentations as A
import numpy as np
import torch
from PIL import Image

from vqi.augment.review_page import heatmap
from vqi.classes import FOREGROUND_IDS
from vqi.data.transforms import eval_transform
from vqi.metrics import faithfulness, plausibility
from vqi.serve.annotation import GroundTruth
from vqi.serve.registry import LoadedModel
from vqi.viz.overlay import overlay
from vqi.xai.base import BaseCAM
from vqi.xai.targets import Unit, model_logits, select_units

CamFactory = Callable[[torch.nn.Module, str], BaseCAM]


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _areas(pred: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    counts = np.bincount(pred.ravel(), minlength=len(names))
    return {name: {"pixels": int(counts[i]), "percent": round(100.0 * counts[i] / pred.size, 3)}
            for i, name in enumerate(names)}


def image_scores(model: torch.nn.Module, x: torch.Tensor, truth: GroundTruth, units: list[Unit],
                 maps: torch.Tensor, names: list[str], tau: float = 0.5) -> dict[str, dict[str, float]]:
    """Per explained class of one image: EBPG, IoU, Bbox, Drop, Increase (vqi.metrics, in %)."""
    if not units:
        return {}
    ids = [u.class_id for u in units]
    cams = maps.detach().cpu().numpy()
    boxes = np.stack([truth.boxes[c] for c in ids])
    gt = np.stack([truth.mask == c for c in ids])
    y, o = faithfulness.masked_confidences(model, x[0], maps, ids, torch.stack([u.mask for u in units]))
    columns = {"ebpg": plausibility.ebpg(cams, boxes), "iou": plausibility.iou(cams, gt, tau),
               "bbox": plausibility.bbox(cams, boxes), "drop": faithfulness.drop(y, o).cpu().numpy(),
               "increase": faithfulness.increase(y, o).cpu().numpy()}
    return {names[c]: {k: round(float(v[j]), 3) for k, v in columns.items()} for j, c in enumerate(ids)}


def analyze(loaded: LoadedModel, rgb: np.ndarray, method: str, cam_factory: CamFactory,
            truth: GroundTruth | None = None) -> dict:
    """Everything the result page shows for one image, as JSON-ready data."""
    size = loaded.image_size
    start = time.perf_counter()
    picture = A.Resize(size, size)(image=rgb)["image"]
    x = eval_transform(size)(image=rgb)["image"][None].to(next(loaded.model.parameters()).device)
    with torch.no_grad():
        logits = model_logits(loaded.model, x)
    pred = logits.argmax(1)[0]
    predicted_at = time.perf_counter()

    names = loaded.class_names
    foreground = [c for c in FOREGROUND_IDS if c < len(names)]
    skipped: dict[int, str] = {}
    if truth is None:
        targets = [(c, pred == c) for c in foreground if bool((pred == c).any())]
    else:
        gt = torch.from_numpy(truth.mask.astype(np.int64)).to(pred.device)
        targets, skipped = select_units(gt, pred, "pred", foreground)
    units = [Unit(0, c, mask) for c, mask in targets]
    maps = cam_factory(loaded.model, loaded.target_layer)(x, units) if units else x.new_zeros((0, size, size))
    explained_at = time.perf_counter()

    pred_np = pred.cpu().numpy().astype(np.uint8)
    result = {
        "model": loaded.id, "method": method, "size": [size, size],
        "areas": _areas(pred_np, names),
        "overlays": {"image": png_data_url(picture), "segmentation": png_data_url(overlay(picture, pred_np)),
                     "explanations": {names[u.class_id]: png_data_url(heatmap(picture, m.cpu().numpy()))
                                      for u, m in zip(units, maps)}},
        "skipped": {names[c]: reason for c, reason in skipped.items()},
    }
    if truth is not None:
        result["overlays"]["ground_truth"] = png_data_url(overlay(picture, truth.mask))
        result["scores"] = image_scores(loaded.model, x, truth, units, maps, names)
    done = time.perf_counter()
    result["timing_ms"] = {"predict": round(1000 * (predicted_at - start), 1),
                           "explain": round(1000 * (explained_at - predicted_at), 1),
                           "total": round(1000 * (done - start), 1)}
    return result
