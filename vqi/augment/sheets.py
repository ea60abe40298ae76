"""One image's review tiles as one PNG, the "sheet", from which every proposal's panel is cut.

The augment stage writes `panels/<image>.png` once per image that has proposals: ground truth |
prediction | then, per thin class with proposals, its explanation heatmap and all of its
proposals highlighted, at the image's size with white gaps. The tile names travel in the PNG's
text chunk `vqi-tiles`, so a reader needs nothing else. A proposal's panel is the sheet's
ground truth, prediction, explanation and proposals tiles of its class, cut to a window around
its box: the offline page crops them with CSS, the review app cuts the full tiles it needs. One
file of a few tiles per image costs a fraction of one encoded panel per proposal.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vqi.utils.atomic import atomic_path

TILES_KEY = "vqi-tiles"
GAP = 4
"""White pixels between two tiles of a sheet."""
TRUTH, PREDICTION = "ground truth", "prediction"


def explanation_tile(class_name: str) -> str:
    return f"explanation {class_name}"


def proposals_tile(class_name: str) -> str:
    return f"proposals {class_name}"


def sheet_name(image_stem: str) -> str:
    return f"{image_stem}.png"


def side_by_side(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles of one height (H x W_i x 3) in a row, `GAP` white pixels between two."""
    spacer = np.full((tiles[0].shape[0], GAP, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(row, axis=1)


def save_sheet(path: Path, tiles: dict[str, np.ndarray]) -> None:
    """Tiles (same H x W x 3 each) side by side, their names in the text chunk. zlib level 1,
    Huffman coding only (written once, read rarely); atomic but not fsynced (a derived file:
    `augment.force=true` draws it again)."""
    info = PngInfo()
    info.add_text(TILES_KEY, json.dumps(list(tiles)))
    with atomic_path(path, durable=False) as tmp:
        Image.fromarray(side_by_side(list(tiles.values()))).save(tmp, format="PNG", pnginfo=info, compress_level=1,
                                                                  compress_type=zlib.Z_HUFFMAN_ONLY)


@dataclass(frozen=True)
class SheetLayout:
    """Where each named tile starts in a sheet of `width` x `height` px (tiles `tile_width` wide)."""

    names: list[str]
    width: int
    height: int

    @property
    def tile_width(self) -> int:
        return (self.width - GAP * (len(self.names) - 1)) // len(self.names)

    def left(self, name: str) -> int:
        return self.names.index(name) * (self.tile_width + GAP)


def _layout(img: Image.Image) -> SheetLayout | None:
    names = img.info.get(TILES_KEY)   # a text chunk before the pixels: read without decoding them
    return SheetLayout(json.loads(names), *img.size) if names else None


def read_layout(path: Path) -> SheetLayout | None:
    """The sheet's tile names and size, from its header (no pixels decoded); None when `path` is
    not a sheet (absent, or a PNG without the text chunk)."""
    if not path.is_file():
        return None
    with Image.open(path) as img:
        return _layout(img)


def cut_tiles(path: Path, names: list[str]) -> list[np.ndarray] | None:
    """The named full tiles of a sheet (opened once); None when it is not a sheet or lacks one."""
    if not path.is_file():
        return None
    with Image.open(path) as img:
        layout = _layout(img)
        if layout is None or any(n not in layout.names for n in names):
            return None
        pixels = np.asarray(img.convert("RGB"))
    width = layout.tile_width
    return [pixels[:, layout.left(n):layout.left(n) + width] for n in names]


def window(bbox: list[int], height: int, width: int, context: float = 0.5, min_side: int = 64
           ) -> tuple[slice, slice]:
    """Rows and columns of a panel around a COCO [x, y, w, h] box: the box widened by `context`
    of its size on each side, at least `min_side` px where the image allows, inside the image."""
    x, y, w, h = bbox

    def span(start: int, size: int, limit: int) -> slice:
        side = min(limit, max(min_side, round(size * (1 + 2 * context))))
        lo = min(max(0, start + size // 2 - side // 2), limit - side)
        return slice(lo, lo + side)

    return span(y, h, height), span(x, w, width)
