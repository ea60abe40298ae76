"""The CAM factory: a method on an engine, from plain arguments.

`vqi.config.build_cam(cfg, model)` reads the `xai` config group, instantiates the method's
`_target_` (Hydra) and calls `build_cam` here.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from vqi.xai.base import BaseCAM
from vqi.xai.library import LibraryCAM

ENGINES = ("fast", "library")
"""`fast`: vqi's own batched implementations; `library`: pytorch-grad-cam's."""


def build_cam(model: nn.Module, *, name: str, engine: str, target_layer: str,
              method: Callable[..., BaseCAM] | None = None, library_method: str | None = None,
              batch_size: int = 16) -> BaseCAM:
    """Method `name` on `engine`: `method(model=, target_layer=)` for the fast engine (None: the
    method has no fast implementation), pytorch-grad-cam's `library_method` (batched by
    `batch_size`) for the library engine."""
    if engine == "fast":
        if method is None:
            raise ValueError(f"xai={name} has no fast implementation (conf/xai/{name}.yaml has no "
                             "method._target_); use xai.engine=library")
        return method(model=model, target_layer=target_layer)
    if engine == "library":
        if not library_method:
            raise ValueError(f"xai={name} has no pytorch-grad-cam equivalent (xai.library_method is null); "
                             "use xai.engine=fast")
        return LibraryCAM(model, target_layer, library_method, batch_size=batch_size)
    raise ValueError(f"xai.engine: expected one of {ENGINES}, got {engine!r}")
