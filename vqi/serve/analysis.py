"""One uploaded image through a model: prediction, class areas, explanations, and (with ground
truth) that image's plausibility and faithfulness scores, with every step timed.

The page shows the image at its own resolution (at most `display_max_side` px on its longer
side) with the prediction, ground truth and explanations as separate layers that the browser
blends with an opacity control: class masks as palette PNGs (index = class id, background
transparent) and explanations as 8-bit grey PNGs (0..255 = 0..1) that the page colours with
`colormap`. The scores are computed at the model's input size, as stage=evaluate computes them.
`overlays` keeps the blended pictures at the model's input size for API users.

A class the model predicts but the annotation lacks (a false positive) is explained too: its
faithfulness (Drop, Increase) needs no annotation; its plausibility cannot be measured.
"""
from __future__ import annotations

import base64
import io
from typing import Callable

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from vqi.review.page import heatmap
from vqi.classes import FOREGROUND_IDS, IGNORE_INDEX
from vqi.data.transforms import eval_transform
from vqi.metrics import faithfulness, plausibility
from vqi.serve.annotation import GroundTruth
from vqi.serve.registry import LoadedModel
from vqi.serve.timing import Stopwatch
from vqi.viz.overlay import PALETTE, UNKNOWN_COLOUR, overlay
from vqi.xai.base import BaseCAM
from vqi.xai.targets import SKIP_NOT_IN_GT, Unit, model_logits, select_units
from vqi.engine.prediction import predicted_classes

CamFactory = Callable[[torch.nn.Module, str], BaseCAM]
COLORMAP = "jet"
ANNOTATED, FALSE_POSITIVE, PREDICTED = "annotated", "false_positive", "predicted"
"""Why a class is explained: in the annotation and predicted; predicted only (a false
positive); predicted, with no annotation uploaded."""
SCORE_INFO = {
    "ebpg": {"label": "EBPG", "unit": "%", "better": "higher",
             "help": "share of the explanation's energy inside the annotated boxes"},
    "iou": {"label": "IoU", "unit": "%", "better": "higher",
            "help": "overlap of the explanation (>= 0.5) with the annotated mask"},
    "bbox": {"label": "Bbox", "unit": "%", "better": "higher",
             "help": "share of the top-N explained pixels inside the boxes (N = box area)"},
    "drop": {"label": "Drop", "unit": "%", "better": "lower",
             "help": "confidence lost when the image is masked by the explanation"},
    "increase": {"label": "Increase", "unit": "%", "better": "higher",
                 "help": "100 if masking by the explanation raised the confidence, else 0"},
}
VOID_HELP = ("void (white): parts the annotator marked as unclear (TTPLA's `void` label); ignored by "
             "training and by every score")


def data_url(pixels: np.ndarray | Image.Image, compress_level: int = 6) -> str:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def mask_layer(mask: np.ndarray) -> str:
    """A class-index mask as a palette PNG: each class in its colour, background transparent."""
    palette = np.tile(np.array(UNKNOWN_COLOUR, np.uint8), (256, 1))
    for cls, colour in PALETTE.items():
        palette[cls] = colour
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette.ravel().tolist())
    image.info["transparency"] = 0
    return data_url(image, compress_level=1)


def cam_layer(cam: np.ndarray) -> str:
    """An explanation map in [0, 1] as an 8-bit grey PNG."""
    return data_url((np.clip(cam, 0, 1) * 255).round().astype(np.uint8), compress_level=1)


def legend(names: list[str]) -> list[dict]:
    """Colour -> class for every class the model knows, and void."""
    rows = [{"id": i, "name": n, "colour": "#%02x%02x%02x" % PALETTE.get(i, UNKNOWN_COLOUR)}
            for i, n in enumerate(names)]
    rows.append({"id": IGNORE_INDEX, "name": "void", "colour": "#ffffff", "help": VOID_HELP})
    return rows


def colormap_stops(n: int = 256) -> list[str]:
    """The explanation colour map as `n` hex colours from 0 to 1 (for the page's colour bar)."""
    colours = (colormaps[COLORMAP](np.linspace(0, 1, n))[:, :3] * 255).round().astype(int)
    return ["#%02x%02x%02x" % tuple(c) for c in colours]


def display_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) the page shows: the image's own, scaled down only past `max_side`."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _areas(pred: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    counts = np.bincount(pred.ravel(), minlength=len(names))
    return {name: {"pixels": int(counts[i]), "percent": round(100.0 * counts[i] / pred.size, 3)}
            for i, name in enumerate(names)}


def image_scores(model: torch.nn.Module, x: torch.Tensor, truth: GroundTruth | None, units: list[Unit],
                 maps: torch.Tensor, names: list[str], tau: float = 0.5) -> dict[str, dict[str, float | None]]:
    """Per explained class of one image: EBPG, IoU, Bbox, Drop, Increase (vqi.metrics, in %).
    Plausibility (EBPG, IoU, Bbox) is None for a class the annotation lacks."""
    if not units:
        return {}
    ids = [u.class_id for u in units]
    y, o = faithfulness.masked_confidences(model, x[0], maps, ids, torch.stack([u.mask for u in units]))
    columns: dict[str, list] = {"drop": faithfulness.drop(y, o).cpu().numpy().tolist(),
                                "increase": faithfulness.increase(y, o).cpu().numpy().tolist()}
    annotated = [j for j, c in enumerate(ids) if truth is not None and bool((truth.mask == c).any())]
    plaus: dict[str, list] = {k: [None] * len(ids) for k in ("ebpg", "iou", "bbox")}
    if annotated:
        cams = maps[annotated].detach().cpu().numpy()
        boxes = np.stack([truth.boxes[ids[j]] for j in annotated])
        gt = np.stack([truth.mask == ids[j] for j in annotated])
        values = {"ebpg": plausibility.ebpg(cams, boxes), "iou": plausibility.iou(cams, gt, tau),
                  "bbox": plausibility.bbox(cams, boxes)}
        for key, vals in values.items():
            for j, v in zip(annotated, vals):
                plaus[key][j] = float(v)
    columns = {**plaus, **columns}
    return {names[c]: {k: None if v[j] is None else round(float(v[j]), 3) for k, v in columns.items()}
            for j, c in enumerate(ids)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def analyze(loaded: LoadedModel, rgb: np.ndarray, method: str, cam_factory: CamFactory,
            truth: GroundTruth | None = None, clock: Stopwatch | None = None,
            display_max_side: int = 4096) -> dict:
    """Everything the result page shows for one image, as JSON-ready data; each step is timed
    on `clock` (the request's stopwatch), GPU work synchronised before the clock is read."""
    clock = clock or Stopwatch()
    size = loaded.image_size
    device = next(loaded.model.parameters()).device
    names = loaded.class_names
    foreground = [c for c in FOREGROUND_IDS if c < len(names)]
    with clock.part("preprocess"):
        picture = A.Resize(size, size)(image=rgb)["image"]
        x = loaded.precision.inputs(eval_transform(size)(image=rgb)["image"][None], device)
    with clock.part("predict"), torch.no_grad(), loaded.precision.context(device):
        logits = model_logits(loaded.model, x).float()
        pred = predicted_classes(logits)[0]
        _sync(device)

    with clock.part("explain"):
        skipped: dict[int, str] = {}
        if truth is None:
            targets = [(c, pred == c) for c in foreground if bool((pred == c).any())]
            why = {c: PREDICTED for c, _ in targets}
        else:
            gt = torch.from_numpy(truth.mask.astype(np.int64)).to(pred.device)
            targets, skipped = select_units(gt, pred, "pred", foreground)
            why = {c: ANNOTATED for c, _ in targets}
            for c in [c for c, reason in skipped.items() if reason == SKIP_NOT_IN_GT]:
                targets.append((c, pred == c))  # a false positive: explained, not skipped
                why[c] = FALSE_POSITIVE
                del skipped[c]
        units = [Unit(0, c, mask) for c, mask in targets]
        with loaded.precision.context(device):
            maps = cam_factory(loaded.model, loaded.target_layer)(x, units) if units else x.new_zeros((0, size, size))
        _sync(device)

    scored = {}
    if truth is not None:
        with clock.part("scores"):
            with loaded.precision.context(device):
                scored = image_scores(loaded.model, x, truth, units, maps, names)
            _sync(device)

    height, width = display_size(*rgb.shape[:2], display_max_side)
    with clock.part("upsample"), torch.no_grad():
        display_pred = predicted_classes(F.interpolate(logits, size=(height, width), mode="bilinear",
                                                       align_corners=False))[0].to(torch.uint8).cpu().numpy()
        display_maps = (F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
                        .clamp(0, 1).cpu().numpy() if units else [])
        pred_np = pred.cpu().numpy().astype(np.uint8)

    with clock.part("encode"):
        explained = {names[u.class_id]: why[u.class_id] for u in units}
        thumbs = {names[u.class_id]: data_url(heatmap(picture, m.cpu().numpy()))
                  for u, m in zip(units, maps) if why[u.class_id] != FALSE_POSITIVE}
        result = {
            "model": loaded.id, "method": method, "size": [size, size],
            "precision": loaded.precision.describe(device),
            "image_size": [int(rgb.shape[1]), int(rgb.shape[0])], "display_size": [width, height],
            "areas": _areas(display_pred, names),
            "legend": legend(names), "colormap": colormap_stops(),
            "explained": explained,
            "layers": {"prediction": mask_layer(display_pred),
                       "explanations": {names[u.class_id]: cam_layer(m) for u, m in zip(units, display_maps)}},
            "overlays": {"image": data_url(picture), "segmentation": data_url(overlay(picture, pred_np)),
                         "explanations": thumbs},
            "skipped": {names[c]: reason for c, reason in skipped.items()},
        }
        if truth is not None:
            result["overlays"]["ground_truth"] = data_url(overlay(picture, truth.mask))
            if truth.display is not None:
                result["layers"]["ground_truth"] = mask_layer(truth.display)
            result["scores"] = {n: s for n, s in scored.items() if explained[n] != FALSE_POSITIVE}
            result["false_positives"] = {n: s for n, s in scored.items() if explained[n] == FALSE_POSITIVE}
            result["score_info"] = SCORE_INFO
    return result
