"""Training checkpoints: written atomically, read with `weights_only=True`, checked on load.

The dict's keys are fixed by docs/architecture.md: `model`, `optimizer`, `scheduler`, `epoch`,
`best_score`, `class_names`, `model_config` (kwargs of `build_model`), `config`, `mlflow_run_id`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqi.models.factory import build_model
from vqi.models.weights_file import WeightsFileError, read_plain
from vqi.utils.atomic import atomic_path

REQUIRED_KEYS = ("model", "epoch", "class_names", "model_config")


class CheckpointError(WeightsFileError):
    """A checkpoint file that is missing, corrupt, or does not fit the model it describes."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `checkpoint` to `path` so that a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (tensors and plain containers only) and check its required keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = read_plain(path, "checkpoint")
    except WeightsFileError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the field(s) {', '.join(missing)}")
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, load its weights, return `(model.eval(), ckpt)`."""
    ckpt = load_checkpoint(path)
    config = dict(ckpt["model_config"])
    config.update(weights=None, weights_backbone=None)  # the state_dict below replaces them
    if len(ckpt["class_names"]) != config.get("num_classes"):
        raise CheckpointError(f"checkpoint {path}: {len(ckpt['class_names'])} class_names but "
                              f"model_config.num_classes={config.get('num_classes')}")
    try:
        model = build_model(**config)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path}: field `model` does not fit model_config "
                              f"{config}: {err}") from err
    return model.to(device).eval(), ckpt
