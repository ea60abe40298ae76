"""Config plumbing for the entry point and stages: resolvers, and composing the app's config."""
from __future__ import annotations

import copy

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from vqi import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """`${vqi_root:}` is the checkout's absolute path, so no path depends on the working dir."""
    if not OmegaConf.has_resolver("vqi_root"):
        OmegaConf.register_new_resolver("vqi_root", lambda: str(PROJECT_ROOT))


def compose_config(overrides: list[str]) -> DictConfig:
    """The app's config composed with `overrides`, inside the running Hydra app or outside it."""
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def with_xai_method(cfg: DictConfig, method: str) -> DictConfig:
    """A copy of `cfg` whose `xai` group is `conf/xai/<method>.yaml` (interpolations kept)."""
    if cfg.xai.name == method:
        return cfg
    node = compose_config([f"xai={method}"]).xai
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.xai = node
    return out
