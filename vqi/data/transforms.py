"""Paired image+mask transforms (albumentations), built from plain config values.

Training: flips, random scale then a `crop` x `crop` window (padding the mask with 255 so padded
pixels are ignored), colour jitter; a crop smaller than `size` makes steps cheaper while the
(fully convolutional) model is still evaluated on whole images. Evaluation: resize to `size` and normalise only. Both end
with ImageNet normalisation and a CHW float tensor.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from vqi.classes import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finish() -> list[A.BasicTransform]:
    return [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]


def train_transform(size: int, crop: int | None = None, hflip: float = 0.5, vflip: float = 0.0,
                    scale: Sequence[float] = (0.75, 1.25), brightness: float = 0.2,
                    contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.02,
                    color_p: float = 0.5, seed: int | None = None) -> A.Compose:
    """Resize to `size`, flips, scale in `scale` (relative), pad/crop to `crop`, colour jitter."""
    crop = crop or size
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise ValueError(f"train transform `scale` must be 0 < low <= high, got {list(scale)}")
    return A.Compose([
        A.Resize(size, size),
        A.HorizontalFlip(p=hflip),
        A.VerticalFlip(p=vflip),
        A.RandomScale(scale_limit=(lo - 1, hi - 1), p=1.0),
        A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(crop, crop),
        A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                      p=color_p),
        *_finish(),
    ], seed=seed)


def eval_transform(size: int) -> A.Compose:
    """Resize to `size` x `size` (nearest for the mask) and normalise."""
    return A.Compose([A.Resize(size, size), *_finish()])
