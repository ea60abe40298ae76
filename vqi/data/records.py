"""The format-independent record a source reader yields, and the error every reader raises."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

VOID = "void"
"""The label TTPLA uses for regions nobody should be scored on."""


class DataError(ValueError):
    """Bad input: names the file and the field, and says what was expected."""

    def __init__(self, file: str | Path, field: str, message: str):
        self.file, self.field, self.reason = str(file), field, message
        super().__init__(f"{file}: {field}: {message}")


@dataclass(frozen=True)
class Shape:
    """One annotated object: a project class name (or `void`) and its polygons (N x 2, x/y)."""

    label: str
    polygons: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Sample:
    """One image (H x W x 3 uint8 RGB) with its shapes, in the source's pixel coordinates."""

    stem: str
    source: Path
    image: np.ndarray
    shapes: tuple[Shape, ...]

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def map_label(raw: object, class_map: Mapping[str, str], file: Path, field: str) -> str:
    """Lower-case a source label and map it to a project class name (or `void`)."""
    if not isinstance(raw, str) or not raw.strip():
        raise DataError(file, field, f"expected a non-empty label string, got {raw!r}")
    key = raw.strip().lower()
    if key not in class_map:
        raise DataError(file, field, f"unknown label {raw!r}; known labels: {', '.join(sorted(class_map))}")
    return class_map[key]


def check_polygon(points: object, width: int, height: int, tolerance: float,
                  file: Path, field: str) -> np.ndarray:
    """Validate a polygon (>= 3 finite points inside the image, up to `tolerance` px outside)
    and return it clipped to the image as an N x 2 float array."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(file, field, "expected a list of [x, y] number pairs") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(file, field, f"expected a list of [x, y] pairs, got shape {arr.shape}")
    if len(arr) < 3:
        raise DataError(file, field, f"a polygon needs at least 3 points, got {len(arr)}")
    if not np.isfinite(arr).all():
        raise DataError(file, field, "points must be finite numbers")
    low, high = arr.min(axis=0), arr.max(axis=0)
    if (low < -tolerance).any() or high[0] > width + tolerance or high[1] > height + tolerance:
        raise DataError(file, field, f"points span x {low[0]:.1f}..{high[0]:.1f}, y {low[1]:.1f}..{high[1]:.1f}, "
                                     f"outside the {width}x{height} image (tolerance {tolerance} px)")
    return np.clip(arr, 0.0, [width, height])


def load_rgb(path: Path, expected: tuple[int, int] | None, size_file: Path, size_field: str) -> np.ndarray:
    """Decode an image as RGB; `expected` = (width, height) that `size_file` states in `size_field`."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(path, "image", f"cannot be read as an image ({err})") from None
    if expected is not None and (rgb.shape[1], rgb.shape[0]) != tuple(expected):
        raise DataError(size_file, size_field, f"says {expected[0]}x{expected[1]} but the image "
                                               f"{path.name} is {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def find_image(images_dir: Path, name_hint: str | None, stem: str, file: Path, field: str,
               extensions: Sequence[str] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")) -> Path:
    """The image file for a record: `name_hint` relative to `images_dir`, else its base name there,
    else `<stem>.<ext>`."""
    candidates = []
    if name_hint:
        hint = name_hint.replace("\\", "/")
        candidates += [images_dir / hint.rsplit("/", 1)[-1]]
        if "/" in hint and not hint.startswith("/") and ".." not in hint.split("/"):
            candidates.insert(0, images_dir / hint)
    candidates += [images_dir / f"{stem}{ext}" for ext in extensions]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(file, field, f"no image {candidates[0].name!r} (or {stem}.jpg/.png) in {images_dir}")
