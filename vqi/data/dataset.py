"""The prepared folder (docs/architecture.md) as a torch Dataset of `(image, mask, stem)`.

Split S lists its images in `annotations/S.json`; images come from `images/<file_name>`, masks
from `masks/S/<stem>.png` (uint8 class ids, 255 = ignore) or, with `labels="truth"` (generated
data only), the true masks `masks_truth/S/<stem>.png`, distractors read as background.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vqi.classes import BACKGROUND, CLASS_NAMES, IGNORE_INDEX, PERPLEXED

MASK_FOLDERS = {"annotated": "masks", "truth": "masks_truth"}
"""Which masks a dataset reads: the annotation (what training normally sees) or the truth."""

Transform = Callable[..., dict]
"""An albumentations-style callable: `transform(image=HxWx3 uint8, mask=HxW uint8)` -> dict."""


def read_split(processed_dir: str | Path, split: str) -> dict:
    """The COCO document of one split, with a clear error when it is missing or malformed."""
    path = Path(processed_dir) / "annotations" / f"{split}.json"
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"split {split!r}: {path} does not exist (splits found: "
                                f"{', '.join(found) or 'none'}; run stage=prepare first)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    for field in ("images", "categories"):
        if not isinstance(doc.get(field), list):
            raise ValueError(f"{path}: field `{field}` missing or not a list")
    return doc


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 class-id mask, checked to be single-channel and of the expected (H, W)."""
    mask = np.array(Image.open(path))
    if mask.ndim != 2 or mask.shape != shape:
        raise ValueError(f"mask {path} has shape {mask.shape}, expected {shape} "
                         "(single channel, same size as its image)")
    return mask


def class_names(processed_dir: str | Path, split: str) -> list[str]:
    """`background` + the split's COCO categories by id (255 excluded); index = class id."""
    cats = {int(c["id"]): str(c["name"]) for c in read_split(processed_dir, split)["categories"]
            if int(c["id"]) != IGNORE_INDEX}
    ids = sorted(cats)
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"{Path(processed_dir) / 'annotations' / f'{split}.json'}: category ids "
                         f"{ids} are not 1..{len(ids)}")
    return [CLASS_NAMES[BACKGROUND]] + [cats[i] for i in ids]


class SegmentationDataset(Dataset):
    """Images and masks of one split of the prepared folder, transformed together."""

    def __init__(self, processed_dir: str | Path, split: str, transform: Transform | None = None,
                 labels: str = "annotated"):
        if labels not in MASK_FOLDERS:
            raise ValueError(f"labels: expected one of {', '.join(MASK_FOLDERS)}, got {labels!r}")
        self.root = Path(processed_dir)
        self.split = split
        self.transform = transform
        self.truth = labels == "truth"
        doc = read_split(self.root, split)
        names = [img["file_name"] for img in doc["images"]]
        if not names:
            raise ValueError(f"{self.root / 'annotations' / f'{split}.json'}: split {split!r} has no images")
        self.images = [self.root / "images" / name for name in names]
        self.stems = [Path(name).stem for name in names]
        self.masks = [self.root / MASK_FOLDERS[labels] / split / f"{stem}.png" for stem in self.stems]
        missing = [str(p) for p in (*self.images, *self.masks) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"split {split!r}: {len(missing)} listed file(s) missing, "
                                    f"e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        """Seed the transform's own generator (albumentations ignores global seeds)."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image `index` as read: H x W x 3 uint8 RGB and its H x W uint8 class-id mask."""
        image = np.array(Image.open(self.images[index]).convert("RGB"))
        mask = read_mask(self.masks[index], image.shape[:2])
        if self.truth:  # a distractor is no class of its own in the truth: background
            mask = np.where(mask == PERPLEXED, BACKGROUND, mask).astype(np.uint8)
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        image, mask = self.read(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return as_tensors(image, mask) + (self.stems[index],)


def as_tensors(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """A transform's (or the raw) image and mask as a float CHW tensor (raw: scaled to [0, 1]) and a
    long H x W tensor."""
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1)).float() / 255
    return image, torch.as_tensor(np.asarray(mask), dtype=torch.long)


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: give each worker's transform its own seed from torch's."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, SegmentationDataset):
        info.dataset.reseed(torch.initial_seed() % 2**32)
