"""One pass of the baseline model over a split: per image its prediction and the evidence the
rankers need (probabilities, the chosen method's maps at the usual and at a finer layer, LOTS maps).

Shared by `stage=augment` (proposals ranked for the expert) and `stage=budget` (every ranker
under every budget); torch-only, no Hydra, no MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from vqi.engine.precision import Precision
from vqi.engine.prediction import predicted_classes
from vqi.study.rankers import CAM, CAM_FINE, LOTS, PROBS
from vqi.xai.base import BaseCAM
from vqi.xai.targets import Unit, model_logits


@dataclass
class ExplainedImage:
    stem: str
    image: torch.Tensor
    """The model's input (C x H x W, on the CPU): what the review sheet draws."""
    label: np.ndarray
    pred: np.ndarray
    probs: np.ndarray | None
    cams: dict[str, np.ndarray | None]
    fine_cams: dict[str, np.ndarray | None]
    lots: dict[str, np.ndarray | None]


def explained_images(batches: Iterable, model: torch.nn.Module, device: torch.device, precision: Precision,
                     class_ids: dict[str, int], thin_classes: list[str], needs: set[str],
                     method: BaseCAM | None = None, fine_method: BaseCAM | None = None,
                     lots_method: BaseCAM | None = None) -> Iterator[ExplainedImage]:
    """Per image of `batches` ((images, masks, stems) as the segmentation loader gives them):
    the prediction, and what `needs` asks for; each thin class predicted in an image is one unit
    (target: its predicted mask), the other classes get None."""
    methods = {CAM: method, CAM_FINE: fine_method, LOTS: lots_method}
    missing = [name for name, wanted in methods.items() if name in needs and wanted is None]
    if missing:
        raise ValueError(f"the rankers need {missing} maps but no method was given for them")
    for images, masks, stems in batches:
        images = precision.inputs(images, device)
        with precision.context(device):
            with torch.no_grad():
                logits = model_logits(model, images)
            preds = predicted_classes(logits)
            units = [Unit(i, class_ids[c], preds[i] == class_ids[c]) for i in range(preds.shape[0])
                     for c in thin_classes if (preds[i] == class_ids[c]).any()]
            maps = {key: m(images, units).detach().float().cpu().numpy()
                    for key, m in methods.items() if key in needs}
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy() if PROBS in needs else None
        of_unit = {key: {(u.index, u.class_id): cam for u, cam in zip(units, values)} for key, values in maps.items()}
        preds = preds.cpu().numpy().astype(np.uint8)
        for i, stem in enumerate(stems):
            per_class = lambda key: {c: of_unit[key].get((i, class_ids[c])) for c in thin_classes} if key in of_unit else {}
            yield ExplainedImage(stem=stem, image=images[i].float().cpu(), label=masks[i].numpy().astype(np.uint8),
                                 pred=preds[i], probs=None if probs is None else probs[i],
                                 cams=per_class(CAM), fine_cams=per_class(CAM_FINE), lots=per_class(LOTS))
