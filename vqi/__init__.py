"""vqi: XAI-enhanced semantic segmentation for visual quality inspection."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds `conf/`; paths in config default to folders below it. Installed
from a wheel, this is site-packages (see FROM_CHECKOUT)."""

FROM_CHECKOUT = (PROJECT_ROOT / "conf" / "config.yaml").is_file() and (PROJECT_ROOT / "pyproject.toml").is_file()
"""Whether vqi runs from a checkout (editable install, or `python -m` in it) rather than a wheel."""

CONFIG_DIR = PROJECT_ROOT / "conf" if FROM_CHECKOUT else Path(__file__).resolve().parent / "conf"
"""The checkout's `conf/`; in an installed wheel, the copy the build put inside the package."""

__version__ = "0.1.0"
