"""The teacher's maps for IMPACTX training (docs/metrics.md, "IMPACTX"): a CAM method's map of every
annotated class of every training image, explaining the baseline model with T_c = the annotated
mask A_c (the class is there whatever the baseline predicts, as the paper explains the true class).

Written as the explain stage writes maps (`<folder>/<stem>.npz`: class name -> H x W in [0, 1],
and `explain.json`) with a `source` that says what made them; `teacher_maps_ready` tells whether
the folder already holds the maps of a given source, so a rerun reuses them. The folder is built
beside and swapped in whole (an interrupted run leaves the previous one).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from vqi.engine.precision import Precision
from vqi.utils.atomic import atomic_dir
from vqi.utils.progress import progress
from vqi.xai.base import BaseCAM
from vqi.xai.maps import META, save_maps, write_meta
from vqi.xai.targets import Unit

TARGET = "annotated"
"""T_c of the teacher's maps: the annotated mask of class c in the training image."""


def annotated_units(mask: torch.Tensor, classes: Sequence[int], index: int) -> list[Unit]:
    """The units of image `index`: every class of `classes` its H x W mask holds, T_c = its pixels."""
    return [Unit(index, int(c), mask == c) for c in classes if bool((mask == c).any())]


def teacher_maps_ready(folder: str | Path, source: Mapping[str, Any]) -> bool:
    """Whether `folder` holds the teacher maps that `source` describes (its explain.json says so)."""
    meta = Path(folder) / META
    return meta.is_file() and json.loads(meta.read_text()).get("source") == dict(source)


def write_teacher_maps(cam: BaseCAM, dataset: torch.utils.data.Dataset, class_names: Sequence[str],
                       classes: Sequence[int], folder: str | Path, source: Mapping[str, Any], *,
                       batch_size: int = 4, device: torch.device = torch.device("cpu"),
                       precision: Precision = Precision(), show_progress: bool = False) -> None:
    """Explain every image of `dataset` (`(image, mask, stem)` items at the model's input size) for
    each of `classes` it holds, into `folder` (explain.json's `images`: the class names per stem)."""
    explained: dict[str, list[str]] = {}
    with atomic_dir(folder) as building:
        for start in progress(range(0, len(dataset), batch_size), desc=f"teacher maps ({cam.name})",
                              disable=not show_progress):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            images = precision.inputs(torch.stack([item[0] for item in items]), device)
            units = [u for n, item in enumerate(items) for u in annotated_units(item[1].to(device), classes, n)]
            with precision.context(device):
                maps = cam(images, units).detach().float().cpu().numpy().astype(np.float32)
            for n, (_, _, stem) in enumerate(items):
                mine = {class_names[u.class_id]: maps[i] for i, u in enumerate(units) if u.index == n}
                save_maps(building / f"{stem}.npz", mine, durable=False)   # the folder is fsynced whole
                explained[stem] = list(mine)
        write_meta(building, {"method": cam.name, "checkpoint_hash": source.get("checkpoint_hash"),
                              "target": TARGET, "images": explained, "source": dict(source)})
