"""The checkpoints the app may load, by id: a request names an id, never a path.

The stage builds the registry from the tracking store and the config; the app only looks ids up.
An id names a checkpoint file or a loader (a registered model, which the stage knows how to
fetch); loaded models are kept in a small least-recently-used cache.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from vqi.engine.precision import Precision
from vqi.models.checkpoint import load_model

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEFAULT_TARGET_LAYERS = {"deeplabv3_mobilenet_v3_large": "backbone.15"}
"""Target layer when a checkpoint's config does not name one (ResNets: backbone.layer4)."""

Loader = Callable[[torch.device], tuple[nn.Module, dict]]
"""device -> (model in eval mode, the fields a checkpoint holds: class_names, model_config, config)."""
Source = str | Path | Loader


@dataclass(frozen=True)
class LoadedModel:
    id: str
    model: nn.Module
    class_names: list[str]
    image_size: int
    target_layer: str
    precision: Precision = Precision()


def _get(tree: object, *keys: str) -> object:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


class CheckpointRegistry:
    """id -> checkpoint file or loader. Ids are short plain names; paths never come from requests."""

    def __init__(self, entries: Mapping[str, Source], device: str | torch.device = "cpu",
                 default_image_size: int = 160, cache_size: int = 2, precision: Precision = Precision()):
        bad = [i for i in entries if not ID_PATTERN.match(str(i))]
        if bad:
            raise ValueError(f"checkpoint id {bad[0]!r}: use letters, digits and '._-' only")
        self.sources = {str(k): v if callable(v) else Path(v) for k, v in entries.items()}
        self.device = torch.device(device)
        self.default_image_size = int(default_image_size)
        self.cache_size = max(1, int(cache_size))
        self.precision = precision
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        return list(self.sources)

    def __contains__(self, key: object) -> bool:
        return key in self.sources

    def get(self, key: str) -> LoadedModel:
        """The loaded model of `key` (KeyError when the id is not registered)."""
        source = self.sources[key]
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            model, ckpt = source(self.device) if callable(source) else load_model(source, self.device)
            model = self.precision.prepare(model, self.device)
            arch = str(ckpt["model_config"].get("arch", ""))
            size = _get(ckpt.get("config"), "data", "image_size") or self.default_image_size
            layer = (_get(ckpt.get("config"), "model", "target_layer")
                     or DEFAULT_TARGET_LAYERS.get(arch, "backbone.layer4"))
            loaded = LoadedModel(key, model, list(ckpt["class_names"]), int(size), str(layer), self.precision)
            self._cache[key] = loaded
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return loaded
