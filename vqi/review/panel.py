"""A proposal's tiles for the review page, drawn on request from the split's image, mask and
annotations, so that the proposal tile always shows the row's current k (an enlargement is
recomputed from its annotation: the pixels it gains at k, only ever background).

Tiles: ground truth | prediction | explanation | proposal when the augment stage left the
image's sheet (`vqi.review.sheets`; prediction and explanation need the model, so they are cut
from it), else
image | ground truth | proposal. The proposal tile shows the existing object in its class colour
and the proposed pixels in green, the rest dimmed. A sheet that is not this image's, or not a
sheet at all (tampered, truncated), is left aside with a warning in the server log; its header is
checked before any pixel is decoded.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vqi.augment import regions
from vqi.augment.proposals import ENLARGE, Proposal
from vqi.data.rasterize import instance_mask
from vqi.review.page import PROPOSAL_COLOUR
from vqi.review.safety import BadInput, check_rle, contained
from vqi.review.sheets import PREDICTION, NotASheet, cut_tiles, explanation_tile, sheet_name, side_by_side
from vqi.viz.overlay import colorize, overlay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panel:
    pixels: np.ndarray
    tiles: list[str]


class Annotations:
    """The split's COCO annotations by image stem and id, read again only when the file changes."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._by_stem: dict[str, dict[int, dict]] = {}

    def of(self, stem: str) -> dict[int, dict] | None:
        """Annotation id -> annotation of one image; None when there is no annotations file."""
        if self.path is None or not self.path.is_file():
            return None
        stat = self.path.stat()
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                stems = {img["id"]: Path(img["file_name"]).stem for img in doc["images"]}
                by_stem: dict[str, dict[int, dict]] = {s: {} for s in stems.values()}
                for ann in doc["annotations"]:
                    by_stem[stems[ann["image_id"]]][ann["id"]] = ann
                self._by_stem, self._key = by_stem, key
            return self._by_stem.get(stem, {})


def proposed_pixels(proposal: Proposal, mask: np.ndarray, annotations: Annotations,
                    k: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(the pixels proposed at `k`, the existing object they grow or None). Without the split's
    annotations only the stored region (at the stored k) can be shown."""
    height, width = mask.shape
    where = f"proposal {proposal.proposal_id!r}"
    if proposal.kind == ENLARGE:
        anns = annotations.of(proposal.image)
        k = proposal.k if k is None else k
        if anns is not None and proposal.annotation_id in anns:
            instance = instance_mask(anns[proposal.annotation_id], height, width)
            return regions.enlargement(instance, mask, k), instance
        if k != proposal.k:
            raise BadInput(f"{where}: cannot redraw at k={k}: annotation {proposal.annotation_id} of "
                           f"{proposal.image!r} is not in the split's annotations file", 409)
    check_rle(proposal.region, height, width, f"{where}: field 'region'")
    return regions.decode(proposal.region, height, width), None


def proposal_tile(image: np.ndarray, mask: np.ndarray, region: np.ndarray, instance: np.ndarray | None,
                  alpha: float = 0.7) -> np.ndarray:
    """The image dimmed, the existing object in its class colour, the proposed pixels green."""
    out = image.astype(np.float32) * 0.6
    if instance is not None and instance.any():
        out[instance] = (1 - alpha) * image[instance] + alpha * colorize(mask)[instance]
    out[region] = (1 - alpha) * image[region] + alpha * PROPOSAL_COLOUR
    return out.round().astype(np.uint8)


def _crop(tiles: list[np.ndarray], region: np.ndarray, pad: float = 0.5, least: int = 32) -> list[np.ndarray]:
    """Every tile cut to the proposal's box, grown by `pad` of its size (at least `least` px)."""
    if not region.any():
        return tiles
    x, y, w, h = regions.bbox(region)
    height, width = region.shape
    mx, my = max(least, int(w * pad)), max(least, int(h * pad))
    y0, y1, x0, x1 = max(0, y - my), min(height, y + h + my), max(0, x - mx), min(width, x + w + mx)
    return [t[y0:y1, x0:x1] for t in tiles]


def render(proposal: Proposal, images_dir: Path, masks_dir: Path, panels_dir: Path,
           annotations: Annotations, k: int | None = None, crop: bool = False) -> Panel:
    """The proposal's tiles side by side, with their names."""
    image_path = contained(images_dir, f"{proposal.image}.png", "proposal image")
    mask_path = contained(masks_dir, f"{proposal.image}.png", "proposal image")
    if not image_path.is_file() or not mask_path.is_file():
        raise BadInput(f"no image or mask for {proposal.image!r} in the review split", 404)
    picture = np.asarray(Image.open(image_path).convert("RGB"))
    mask = np.asarray(Image.open(mask_path))
    if picture.shape[:2] != mask.shape:
        raise BadInput(f"image and mask of {proposal.image!r} differ in size", 409)
    region, instance = proposed_pixels(proposal, mask, annotations, k)
    shown_k = (proposal.k if k is None else k) if proposal.kind == ENLARGE else None
    last = f"proposal (k={shown_k}, {int(region.sum())} px)" if shown_k is not None else \
        f"proposal ({int(region.sum())} px)"
    sheet = contained(panels_dir, sheet_name(proposal.image), "proposal image")
    try:
        stage = cut_tiles(sheet, [PREDICTION, explanation_tile(proposal.class_name)], mask.shape)
    except NotASheet as why:
        if sheet.is_file():
            log.warning("review panel of %s: the sheet is not used: %s", proposal.proposal_id, why)
        stage = None
    truth = overlay(picture, mask)
    drawn = proposal_tile(picture, mask, region, instance)
    if stage is not None:
        tiles, names = [truth, *stage, drawn], ["ground truth", "prediction", "explanation", last]
    else:
        tiles, names = [picture, truth, drawn], ["image", "ground truth", last]
    if crop:
        tiles = _crop(tiles, region | (instance if instance is not None else False))
    return Panel(side_by_side(tiles), names)
