"""Models: DeepLabv3 construction, checkpoints, and segmentation losses."""
from vqi.models.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from vqi.models.factory import ARCHS, WeightsNotFoundError, build_model

__all__ = ["ARCHS", "CheckpointError", "WeightsNotFoundError", "build_model", "load_checkpoint",
           "load_model", "save_checkpoint"]
