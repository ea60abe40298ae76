"""Test inputs for the serve and export tests: a real random-weight checkpoint in the documented
format, and a review file of real proposals made by the augment library on a prepared image."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqi.augment.proposals import EnlargeRule, UnlabelledRule, propose_enlargements, propose_unlabelled
from vqi.review.file import write_review
from vqi.classes import CLASS_NAMES
from vqi.data.rasterize import instance_mask
from vqi.models.checkpoint import save_checkpoint
from vqi.models.factory import build_model

ARCH = "deeplabv3_mobilenet_v3_large"


def write_checkpoint(path: Path, size: int = 64, seed: int = 0, images: torch.Tensor | None = None) -> Path:
    """A random-weight DeepLabv3-MobileNetV3 saved as stage=train saves its checkpoints; BatchNorm
    statistics from `images` (the images it will see), else from 16 random ones."""
    torch.manual_seed(seed)
    config = {"arch": ARCH, "num_classes": len(CLASS_NAMES), "weights": None, "weights_backbone": None,
              "aux_loss": False}
    model = build_model(**config)
    _calibrate_batch_norm(model, torch.randn(16, 3, size, size) if images is None else images)
    save_checkpoint({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 0,
                     "best_score": 0.0, "class_names": list(CLASS_NAMES), "model_config": config,
                     "config": {"data": {"image_size": size}, "model": {"arch": ARCH, "target_layer": "backbone.16"}},
                     "mlflow_run_id": None}, path)
    return path


def _calibrate_batch_norm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Set BatchNorm running statistics from `images` (N x 3 x H x W, normalised), as training
    would: with the initial statistics the activations vanish and the logits ignore the input."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 4):
            model(images[start:start + 4])
    model.eval()


def write_review_file(review_file: Path, processed: Path, split: str = "train") -> list[str]:
    """Proposals of the first images of `split` (every cable's enlargement, and one unlabelled
    block the model would predict as cable in the background); returns their ids."""
    doc = json.loads((processed / "annotations" / f"{split}.json").read_text())
    proposals = []
    for image in doc["images"][:2]:
        stem = Path(image["file_name"]).stem
        label = np.asarray(Image.open(processed / "masks" / split / f"{stem}.png"))
        h, w = label.shape
        anns = [a for a in doc["annotations"] if a["image_id"] == image["id"] and a["category_id"] == 1]
        instances = [(a["id"], instance_mask(a, h, w)) for a in anns]
        proposals += propose_enlargements(stem, label, instances, "cable", EnlargeRule(k=2, k_max=3))
        predicted = np.zeros((h, w), bool)
        predicted[: h // 4, : w // 4] = label[: h // 4, : w // 4] == 0
        proposals += propose_unlabelled(stem, label, predicted, "cable", UnlabelledRule(min_area=4, margin=0))
    write_review(review_file, proposals)
    return [p.proposal_id for p in proposals]
