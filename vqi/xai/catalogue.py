"""The CAM methods as `conf/xai/` declares them, read as plain YAML (no Hydra): Table I's labels,
the web app's list and the benches take them from here, so adding a method is its class in
`vqi/xai/` and its yaml."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import yaml

from vqi import CONFIG_DIR


@dataclass(frozen=True)
class XaiMethod:
    """One CAM method as its `conf/xai/<name>.yaml` writes it (interpolations unresolved)."""

    name: str
    label: str
    """Its name in Table I and the app's list: the yaml's `label`, else `name`."""
    target: str | None
    """`method._target_`: the class that engine=fast runs; None when only engine=library has it."""
    options: dict[str, Any]
    """`method`'s other keys: the class's keyword arguments after the model and the layer."""
    model_overrides: tuple[str, ...] = ()
    """`key=value` overrides that train and load the model the method explains, for a method that
    explains a model of its own (IMPACTX); empty for one that explains `xai.checkpoint`."""

    @property
    def own_model(self) -> bool:
        """Whether the method explains a model of its own, trained under `model_overrides`."""
        return bool(self.model_overrides)

    @property
    def standalone(self) -> bool:
        """Whether a model and a layer alone build it (`build`): a fast class whose options are
        plain values, none naming another config key (random_cam's `${seed}`, impactx's
        checkpoint) or holding configs of its own (ensemble's members)."""
        def plain(value: Any) -> bool:
            if isinstance(value, list):
                return all(map(plain, value))
            return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and "${" not in value)
        return self.target is not None and all(map(plain, self.options.values()))

    def build(self, model, target_layer):
        """The fast-engine CAM of `model` at `target_layer`, with the yaml's options (`standalone` only)."""
        if not self.standalone:
            raise ValueError(f"xai={self.name} is not built from a model and a layer alone (conf/xai/{self.name}.yaml)")
        module, _, cls = self.target.rpartition(".")
        return getattr(importlib.import_module(module), cls)(model, target_layer, **self.options)


def xai_catalogue() -> dict[str, XaiMethod]:
    """Every CAM method, by name: one `conf/xai/<name>.yaml` each (files named `_...` are settings
    the methods share, e.g. `_common`). Adding a method is its class in `vqi/xai/` and its yaml."""
    methods = {}
    for path in sorted((CONFIG_DIR / "xai").glob("*.yaml")):
        if path.stem.startswith("_"):
            continue
        node = yaml.safe_load(path.read_text()) or {}
        method = dict(node.get("method") or {})
        target = method.pop("_target_", None)
        method.pop("_partial_", None)
        methods[path.stem] = XaiMethod(path.stem, str(node.get("label") or path.stem), target, method,
                                       tuple(str(o) for o in node.get("model_overrides") or ()))
    return methods


def own_model_methods(methods) -> dict[str, tuple[str, ...]]:
    """{method: its `model_overrides`} for the methods of `methods` that explain a model of their
    own (IMPACTX), in the order given."""
    catalogue = xai_catalogue()
    return {m: catalogue[m].model_overrides for m in methods if m in catalogue and catalogue[m].own_model}
