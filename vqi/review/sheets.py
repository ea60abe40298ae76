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
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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


class NotASheet(ValueError):
    """A file where a sheet should be that is not one this code wrote: absent, not a PNG,
    unreadable, or with a missing or malformed tile list."""


def _layout(img: Image.Image, path: Path) -> SheetLayout:
    """The tile names from the text chunk (read with the header, before any pixel) and the size;
    NotASheet unless they describe tiles of one width side by side, GAP apart."""
    text = img.info.get(TILES_KEY)
    if img.format != "PNG" or not isinstance(text, str):
        raise NotASheet(f"{path.name}: not a PNG with a '{TILES_KEY}' text chunk")
    try:
        names = json.loads(text)
    except (ValueError, RecursionError):
        names = None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
            and len(set(names)) == len(names)):
        raise NotASheet(f"{path.name}: the '{TILES_KEY}' text chunk is not a list of distinct tile names")
    layout = SheetLayout(names, *img.size)
    if layout.tile_width < 1 or layout.width != len(names) * (layout.tile_width + GAP) - GAP:
        raise NotASheet(f"{path.name}: {layout.width} px wide is not {len(names)} tiles {GAP} px apart")
    return layout


@contextmanager
def _open(path: Path) -> Iterator[tuple[Image.Image, SheetLayout]]:
    """The sheet opened lazily (header and text chunk only) with its layout; NotASheet when it
    is absent or not a sheet. PIL's own limits (a decompression bomb, a huge text chunk) count."""
    if not path.is_file():
        raise NotASheet(f"{path.name}: no such sheet")
    try:
        img = Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise NotASheet(f"{path.name}: not a readable image ({type(err).__name__})") from None
    with img:
        yield img, _layout(img, path)


def read_layout(path: Path) -> SheetLayout | None:
    """The sheet's tile names and size, from its header (no pixels decoded); None when `path` is
    not a sheet."""
    try:
        with _open(path) as (_, layout):
            return layout
    except NotASheet:
        return None


def cut_tiles(path: Path, names: list[str], tile_shape: tuple[int, int]) -> list[np.ndarray]:
    """The named full tiles of a sheet of `tile_shape` (height, width) tiles, opened once. Its
    header is checked before any pixel is decoded, so a sheet of another image, or one declaring
    an absurd size, costs nothing; NotASheet says why it is not used."""
    with _open(path) as (img, layout):
        missing = [n for n in names if n not in layout.names]
        if missing:
            raise NotASheet(f"{path.name}: no tile {', '.join(missing)}")
        if (layout.height, layout.tile_width) != tuple(tile_shape):
            raise NotASheet(f"{path.name}: tiles of {layout.tile_width}x{layout.height} px, not this image's "
                            f"{tile_shape[1]}x{tile_shape[0]}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # its size is checked above
                pixels = np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError, zlib.error) as err:    # truncated, corrupt
            raise NotASheet(f"{path.name}: its pixels do not decode ({type(err).__name__})") from None
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
