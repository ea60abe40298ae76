"""A tiny prepared dataset plus a random-weight checkpoint, for the explain/evaluate/report tests."""
from __future__ import annotations

from pathlib import Path

import torch

from processed_factory import write_processed
from vqi.classes import CLASS_NAMES
from vqi.models.checkpoint import save_checkpoint
from vqi.models.factory import build_model

ARCH = "deeplabv3_mobilenet_v3_large"


def write_checkpoint(path: Path, seed: int = 0, background_only: bool = False) -> Path:
    """A checkpoint in the format of docs/architecture.md holding a random-weight model;
    `background_only`: its last layer's bias makes it predict background everywhere (an
    undertrained model: nothing to explain)."""
    torch.manual_seed(seed)
    config = {"arch": ARCH, "num_classes": len(CLASS_NAMES), "weights": None, "weights_backbone": None,
              "aux_loss": False}
    model = build_model(**config)
    if background_only:
        with torch.no_grad():
            model.classifier[-1].bias.copy_(torch.tensor([1e4] + [-1e4] * (len(CLASS_NAMES) - 1)))
    save_checkpoint({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 0,
                     "best_score": 0.0, "class_names": list(CLASS_NAMES), "model_config": config,
                     "config": {}, "mlflow_run_id": ""}, path)
    return path


def xai_setup(tmp_path: Path, test_images: int = 2, size: int = 40) -> list[str]:
    """Write the data and checkpoint; return the overrides that point a run at them."""
    processed = write_processed(tmp_path / "processed", {"train": 1, "test": test_images}, size=size)
    ckpt = write_checkpoint(tmp_path / "ckpt" / "best.pt")
    return [f"model={ARCH}", f"data.processed_dir={processed}", f"data.image_size={size}",
            f"xai.checkpoint={ckpt}", "xai.target=gt", "xai.progress=false", "device=cpu"]
