"""vqi: XAI-enhanced semantic segmentation for visual quality inspection."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds `conf/`; paths in config default to folders below it."""

__version__ = "0.1.0"
