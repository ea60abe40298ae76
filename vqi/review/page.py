"""The offline review page: one panel per proposal (ground truth | prediction | explanation |
proposal), cut from its image's sheet (`vqi.review.sheets`), in a static HTML index that an
expert reads beside the review CSV."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from vqi.augment.proposals import Proposal, label_choices
from vqi.review.sheets import (PREDICTION, TRUTH, SheetLayout, explanation_tile, proposals_tile, read_layout,
                                sheet_name, window)
from vqi.utils.atomic import write_text
from vqi.viz.legend import css_swatches
from vqi.viz.overlay import overlay

PROPOSAL_COLOUR = np.array([0, 255, 120], np.float32)
PANELS_DIR = "panels"
"""The sheets' folder, beside the review file and its page."""
PANEL_TILE_PX = 200
"""A panel tile's longer side on the offline page."""


def heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An explanation map in [0, 1] drawn over the image with the jet colour map."""
    colours = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
    return ((1 - alpha) * image + alpha * colours).round().astype(np.uint8)


def highlight(image: np.ndarray, region: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    out = image.astype(np.float32) * 0.6
    out[region] = (1 - alpha) * image[region] + alpha * PROPOSAL_COLOUR
    return out.round().astype(np.uint8)


def sheet_tiles(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                per_class: dict[str, tuple[np.ndarray | None, np.ndarray]]) -> dict[str, np.ndarray]:
    """One image's sheet (`vqi.review.sheets`): ground truth and prediction overlays, then per
    class its explanation heatmap (`cam`; the plain image when None) and the union of its
    proposals' pixels highlighted, from `per_class`: class name -> (cam, proposed pixels)."""
    tiles = {TRUTH: overlay(image, truth), PREDICTION: overlay(image, predicted)}
    for name, (cam, proposed) in per_class.items():
        tiles[explanation_tile(name)] = heatmap(image, cam) if cam is not None else image
        tiles[proposals_tile(name)] = highlight(image, proposed)
    return tiles


def _panel(proposal: Proposal, layout: SheetLayout | None, src: str) -> str:
    """The proposal's four tiles cut from its image's sheet with CSS, its box outlined on the
    last; "(no panel)" without a sheet that holds its class."""
    source = proposal.class_name
    names = [TRUTH, PREDICTION, explanation_tile(source), proposals_tile(source)]
    if layout is None or any(n not in layout.names for n in names):
        return "(no panel)"
    rows, cols = window(proposal.bbox, layout.height, layout.tile_width)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    scale = PANEL_TILE_PX / max(height, width)
    size = f"width:{width * scale:.0f}px;height:{height * scale:.0f}px"
    tiles = []
    for name in names:
        left = (layout.left(name) + cols.start) * scale
        tiles.append(f'<div class="tile" title="{html.escape(name)}" style="{size};background:url({html.escape(src)}) '
                     f'{-left:.1f}px {-rows.start * scale:.1f}px / {layout.width * scale:.1f}px '
                     f'{layout.height * scale:.1f}px no-repeat">')
    x, y, w, h = proposal.bbox
    box = (f'<div class="box" style="left:{(x - cols.start) * scale:.0f}px;top:{(y - rows.start) * scale:.0f}px;'
           f'width:{w * scale:.0f}px;height:{h * scale:.0f}px"></div>')
    return "".join(t + "</div>" for t in tiles[:-1]) + tiles[-1] + box + "</div>"


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


def write_review_page(path: str | Path, proposals: list[Proposal], review_file: str | Path,
                      apply_command: str) -> None:
    """A static HTML page beside the review file: every proposal's panel (cut from the sheets in
    `panels/` beside it) with its id, kind, score, label, current decision and who made it. Paths
    are relative (the folder can be moved or shared)."""
    panels_dir = Path(path).parent / PANELS_DIR
    layouts = {stem: read_layout(panels_dir / sheet_name(stem)) for stem in {p.image for p in proposals}}
    rows = []
    for p in proposals:
        picture = _panel(p, layouts[p.image], f"{PANELS_DIR}/{sheet_name(p.image)}")
        k = "" if p.k is None else p.k
        by = f" <i>({html.escape(p.decided_by)})</i>" if p.decided_by else ""
        choices = " or ".join(map(html.escape, label_choices(p)))
        label = html.escape(p.label) if p.label else f"<i>to choose: {choices}</i>"
        rows.append(
            f'<tr class="{p.decision}"><td>{picture}</td><td><code>{html.escape(p.proposal_id)}</code><br>'
            f"{p.kind} · {html.escape(p.class_name)}<br>score {p.score:.3f} · area {p.area} px"
            f"{f' · k={k}' if k != '' else ''}<br>label {label}<br><b>{p.decision}</b>{by}</td></tr>")
    counts = {d: sum(p.decision == d for p in proposals) for d in ("pending", "accept", "reject")}
    name = html.escape(Path(review_file).name)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vqi annotation review</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
td:first-child{{white-space:nowrap}} .tile{{display:inline-block;position:relative;margin-right:4px;image-rendering:pixelated}}
.box{{position:absolute;outline:2px dashed #fff;box-shadow:0 0 0 1px #000}} tr.accept td:last-child{{background:#e6ffed}}
tr.reject td:last-child{{background:#ffeef0}} code{{font-size:90%}}
.sw{{display:inline-block;width:12px;height:12px;border:1px solid #888;margin:0 .25em 0 .8em;vertical-align:middle}}
.bar{{display:inline-block;width:200px;height:12px;border:1px solid #888;vertical-align:middle}}
.legend{{line-height:1.8}}</style></head><body>
<h1>Annotation proposals ({len(proposals)})</h1>
<p>{counts['pending']} pending, {counts['accept']} accepted, {counts['reject']} rejected.
Panels are cropped around the proposal; its box is outlined on the proposal tile (other
proposals of the class in view are green too).</p>
{_legend()}
<p>To decide, edit <code>{name}</code> in this folder (or use the review page of
<code>python -m vqi.run stage=serve</code>): set <code>decision</code> to <code>accept</code> or
<code>reject</code> and <code>decided_by</code> to <code>expert</code> (and change <code>k</code> for an
enlargement; give an accepted <i>unlabelled</i> region its <code>label</code>: its thin class, or
<code>perplexed</code> for a look-alike), then run <code>{html.escape(apply_command)}</code>.</p>
<table>{''.join(rows)}</table></body></html>
"""
    write_text(path, page)
