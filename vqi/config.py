"""OmegaConf resolvers the config files use; registered by the entry point and by tests."""
from __future__ import annotations

from omegaconf import OmegaConf

from vqi import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """`${vqi_root:}` is the checkout's absolute path, so no path depends on the working dir."""
    if not OmegaConf.has_resolver("vqi_root"):
        OmegaConf.register_new_resolver("vqi_root", lambda: str(PROJECT_ROOT))
