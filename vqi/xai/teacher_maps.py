"""Training images with their teacher's maps, transformed together (IMPACTX; docs/metrics.md, "IMPACTX").

`TeacherMapsDataset` yields `(image, mask, stem, teacher)`. `teacher` is a (K-1) x H x W float32
tensor whose channel c - 1 is the teacher's map of class c (`<maps_dir>/<stem>.npz`, written by
`vqi.xai.teacher`), moved by the same flips, scaling and crop as the image and its mask
(albumentations' mask targets: nearest neighbour, so every value is one of the map's). NaN marks
where there is no target: all of a class the image has no map of, and the pixels the crop padded
(the transform fills mask targets with 255 there: `train_transform`'s `fill_mask`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vqi.data.dataset import SegmentationDataset, Transform, as_tensors
from vqi.xai.maps import load_maps


class TeacherMapsDataset(SegmentationDataset):
    """A split's images and masks (as `SegmentationDataset`) plus the teacher's maps of each image."""

    def __init__(self, processed_dir: str | Path, split: str, transform: Transform | None,
                 maps_dir: str | Path, class_names: Sequence[str], labels: str = "annotated"):
        super().__init__(processed_dir, split, transform, labels)
        self.maps_dir = Path(maps_dir)
        self.class_names = list(class_names)
        missing = [stem for stem in self.stems if not (self.maps_dir / f"{stem}.npz").is_file()]
        if missing:
            raise FileNotFoundError(f"teacher maps: {self.maps_dir} lacks the maps of {len(missing)} image(s) "
                                    f"of split {split!r}, e.g. {missing[0]}.npz")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor]:
        image, mask = self.read(index)
        path = self.maps_dir / f"{self.stems[index]}.npz"
        maps = load_maps(path)
        foreground = self.class_names[1:]
        for name, layer in maps.items():
            if name not in foreground or layer.shape != mask.shape:
                raise ValueError(f"{path}: map {name!r} {layer.shape} is not a foreground class of "
                                 f"{foreground} at the image's size {mask.shape}")
        channels = [foreground.index(name) for name in maps]
        layers = list(maps.values())
        if self.transform is not None:
            out = (self.transform(image=image, mask=mask, masks=layers) if layers
                   else self.transform(image=image, mask=mask))
            image, mask, layers = out["image"], out["mask"], out.get("masks", [])
        image, mask = as_tensors(image, mask)
        teacher = torch.full((len(foreground), *mask.shape), float("nan"))
        for channel, layer in zip(channels, layers):
            teacher[channel] = torch.as_tensor(np.asarray(layer), dtype=torch.float32)
        teacher[teacher > 1] = float("nan")   # padded by the crop (filled with 255); maps lie in [0, 1]
        return image, mask, self.stems[index], teacher
