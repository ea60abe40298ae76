"""The checkpoints the app may load, by id: a request names an id, never a path.

The stage builds the registry from the tracking store and the config; the app only looks ids up.
Loaded models are kept in a small least-recently-used cache.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from vqi.engine.precision import Precision
from vqi.models.checkpoint import load_model

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEFAULT_TARGET_LAYERS = {"deeplabv3_mobilenet_v3_large": "backbone.15"}
"""Target layer when a checkpoint's config does not name one (ResNets: backbone.layer4)."""


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
    """id -> checkpoint file. Ids are short plain names; paths never come from requests."""

    def __init__(self, entries: Mapping[str, str | Path], device: str | torch.device = "cpu",
                 default_image_size: int = 160, cache_size: int = 2, precision: Precision = Precision()):
        bad = [i for i in entries if not ID_PATTERN.match(str(i))]
        if bad:
            raise ValueError(f"checkpoint id {bad[0]!r}: use letters, digits and '._-' only")
        self.paths = {str(k): Path(v) for k, v in entries.items()}
        self.device = torch.device(device)
        self.default_image_size = int(default_image_size)
        self.cache_size = max(1, int(cache_size))
        self.precision = precision
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        return list(self.paths)

    def __contains__(self, key: object) -> bool:
        return key in self.paths

    def get(self, key: str) -> LoadedModel:
        """The loaded model of `key` (KeyError when the id is not registered)."""
        path = self.paths[key]
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            model, ckpt = load_model(path, self.device)
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
