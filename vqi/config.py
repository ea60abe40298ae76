"""Config plumbing for the entry point and stages: resolvers, and composing the app's config."""
from __future__ import annotations

import copy

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from vqi import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "conf"


def noise_tag(width_factor: float, offset_px: float, missing: float) -> str:
    """Folder-name suffix of an annotation-noise setting: empty for no noise, so noise-free
    data keeps its folder names and each noise setting gets folders of its own."""
    if (float(width_factor), float(offset_px), float(missing)) == (1.0, 0.0, 0.0):
        return ""
    return f"-noise-w{float(width_factor):g}-o{float(offset_px):g}-m{float(missing):g}"


def register_resolvers() -> None:
    """`${vqi_root:}` is the checkout's absolute path, so no path depends on the working dir;
    `${vqi_noise_tag:w,o,m}` names data folders by their annotation noise."""
    if not OmegaConf.has_resolver("vqi_root"):
        OmegaConf.register_new_resolver("vqi_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("vqi_noise_tag"):
        OmegaConf.register_new_resolver("vqi_noise_tag", noise_tag)


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
