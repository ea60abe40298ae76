"""The offline review page: one panel per proposal (ground truth | prediction | explanation |
proposal) and a static HTML index that an expert reads beside the review CSV."""
from __future__ import annotations

import html
import zlib
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from vqi.augment.proposals import Proposal
from vqi.utils.atomic import atomic_path, write_text
from vqi.viz.legend import css_swatches
from vqi.viz.overlay import overlay

PROPOSAL_COLOUR = np.array([0, 255, 120], np.float32)


def heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An explanation map in [0, 1] drawn over the image with the jet colour map."""
    colours = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
    return ((1 - alpha) * image + alpha * colours).round().astype(np.uint8)


def highlight(image: np.ndarray, region: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    out = image.astype(np.float32) * 0.6
    out[region] = (1 - alpha) * image[region] + alpha * PROPOSAL_COLOUR
    return out.round().astype(np.uint8)


class ImageTiles:
    """One image's review tiles, built once and cropped per proposal.

    Ground truth and prediction overlays are the same for every proposal of the image, the
    explanation heatmap for every proposal of a class; only the proposal highlight is drawn
    per proposal, and only inside its crop. A panel is the proposal's bounding box widened by
    `context` of its size on each side (at least `min_side` px where the image allows), so a
    small proposal stays legible when the page scales it up.
    """

    def __init__(self, image: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                 context: float = 0.5, min_side: int = 64, gap: int = 4):
        self.image = image
        self.shared = [overlay(image, truth), overlay(image, predicted)]
        self.heatmaps: dict[object, np.ndarray] = {}
        self.context, self.min_side, self.gap = context, min_side, gap

    def window(self, bbox: list[int]) -> tuple[slice, slice]:
        """Rows and columns of the crop around a COCO [x, y, w, h] box, clipped to the image."""
        height, width = self.image.shape[:2]
        x, y, w, h = bbox

        def span(start: int, size: int, limit: int) -> slice:
            side = min(limit, max(self.min_side, round(size * (1 + 2 * self.context))))
            lo = min(max(0, start + size // 2 - side // 2), limit - side)
            return slice(lo, lo + side)

        return span(y, h, height), span(x, w, width)

    def panel(self, key: object, cam: np.ndarray | None, region: np.ndarray, bbox: list[int]) -> np.ndarray:
        """Four tiles side by side, cropped to the proposal: ground truth, prediction,
        explanation (`cam` heatmap, cached under `key`; the plain image when None), proposal."""
        if cam is not None and key not in self.heatmaps:
            self.heatmaps[key] = heatmap(self.image, cam)
        explanation = self.heatmaps[key] if cam is not None else self.image
        rows, cols = self.window(bbox)
        tiles = [t[rows, cols] for t in (*self.shared, explanation)]
        tiles.append(highlight(self.image[rows, cols], region[rows, cols]))
        spacer = np.full((tiles[0].shape[0], self.gap, 3), 255, np.uint8)
        out = [tiles[0]]
        for tile in tiles[1:]:
            out += [spacer, tile]
        return np.concatenate(out, axis=1)


def save_png(path: Path, pixels: np.ndarray) -> None:
    """A review panel: zlib level 1, Huffman coding only (written once, read rarely: no search for
    repeats, which on these panels saves ~1/4 of the time for ~2% more bytes), atomic but not
    fsynced (a derived file: `augment.force=true` draws it again, the review app its own)."""
    with atomic_path(path, durable=False) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)


def _legend() -> str:
    """Tile names and colour meanings, for the offline page."""
    swatch = '<span class="sw" style="background:{}"></span>{}'
    classes = [swatch.format(colour, html.escape(name)) for name, colour in css_swatches()]
    classes.append(swatch.format("rgb{}".format(tuple(int(v) for v in PROPOSAL_COLOUR)), "proposed pixels"))
    jet = ", ".join("#%02x%02x%02x" % tuple(int(255 * v) for v in colormaps["jet"](x)[:3]) for x in np.linspace(0, 1, 9))
    return (f'<p class="legend"><b>Tiles</b>: ground truth | prediction | explanation | proposal<br>'
            f'<b>Colours</b>: {" ".join(classes)}<br><b>Explanation</b>: 0 <span class="bar" '
            f'style="background:linear-gradient(to right, {jet})"></span> 1 (strongest attention)<br>'
            f"<b>Decided by</b>: <i>policy:&lt;name&gt;</i> = pre-filled by <code>augment.policy</code>, "
            f"<b>expert</b> = a person</p>")


def write_review_page(path: str | Path, proposals: list[Proposal], panels: dict[str, str],
                      review_file: str | Path, apply_command: str) -> None:
    """A static HTML page beside the review file: every proposal's panel with its id, kind, score,
    current decision and who made it. Paths are relative (the folder can be moved or shared)."""
    rows = []
    for p in proposals:
        panel = panels.get(p.proposal_id)
        picture = f'<img src="{html.escape(panel)}" loading="lazy">' if panel else "(no panel)"
        k = "" if p.k is None else p.k
        by = f" <i>({html.escape(p.decided_by)})</i>" if p.decided_by else ""
        rows.append(
            f'<tr class="{p.decision}"><td>{picture}</td><td><code>{html.escape(p.proposal_id)}</code><br>'
            f"{p.kind} · {html.escape(p.class_name)}<br>score {p.score:.3f} · area {p.area} px"
            f"{f' · k={k}' if k != '' else ''}<br><b>{p.decision}</b>{by}</td></tr>")
    counts = {d: sum(p.decision == d for p in proposals) for d in ("pending", "accept", "reject")}
    name = html.escape(Path(review_file).name)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vqi annotation review</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
img{{width:min(960px,100%);image-rendering:pixelated}} tr.accept td:last-child{{background:#e6ffed}}
tr.reject td:last-child{{background:#ffeef0}} code{{font-size:90%}}
.sw{{display:inline-block;width:12px;height:12px;border:1px solid #888;margin:0 .25em 0 .8em;vertical-align:middle}}
.bar{{display:inline-block;width:200px;height:12px;border:1px solid #888;vertical-align:middle}}
.legend{{line-height:1.8}}</style></head><body>
<h1>Annotation proposals ({len(proposals)})</h1>
<p>{counts['pending']} pending, {counts['accept']} accepted, {counts['reject']} rejected.
Panels are cropped around the proposal.</p>
{_legend()}
<p>To decide, edit <code>{name}</code> in this folder (or use the review page of
<code>python -m vqi.run stage=serve</code>): set <code>decision</code> to <code>accept</code> or
<code>reject</code> and <code>decided_by</code> to <code>expert</code> (and change <code>k</code> for an
enlargement), then run <code>{html.escape(apply_command)}</code>.</p>
<table>{''.join(rows)}</table></body></html>
"""
    write_text(path, page)
