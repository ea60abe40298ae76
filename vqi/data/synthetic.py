"""The embedded default dataset: seeded, TTPLA-like aerial images in TTPLA's labelme layout.

Each image has an aerial-looking background (fields, roads, forest, sky), annotated objects
(catenary cables 1-6 px wide, often several in parallel; lattice, tucohy and wooden towers)
and unannotated cable-like distractors (road markings, fences, branches, field tracks): the
"perplexed objects" a segmentation model confuses with cables. Labels carry TTPLA's quirks
(mixed case, three labelme versions, stale or null `imageData`, points a hair outside the image,
some `void` shapes). Shapes are drawn with 4x supersampling from the very polygons written to
the JSON. The same arguments give byte-identical files.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

SUPERSAMPLE = 4
LABELME_VERSIONS = ("3.16.7", "4.2.7", "4.5.6")


# --- geometry ------------------------------------------------------------------------------

def clip_polygon(points: np.ndarray, size: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a polygon to the square [0, size]^2."""
    out = [tuple(p) for p in points]
    for axis, bound, keep_low in ((0, 0.0, False), (0, size, True), (1, 0.0, False), (1, size, True)):
        inside = (lambda p: p[axis] <= bound) if keep_low else (lambda p: p[axis] >= bound)
        src, out = out, []
        for j, cur in enumerate(src):
            prev = src[j - 1]
            if inside(cur) != inside(prev):
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if inside(cur):
                out.append(cur)
        if not out:
            break
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def catenary(start: np.ndarray, end: np.ndarray, sag: float, steps: int = 48) -> np.ndarray:
    """Points of a hanging cable from `start` to `end`, sagging `sag` px at mid-span (image down)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    k = 1.5
    shape = (np.cosh(k * (2 * t - 1)) - np.cosh(k)) / (1 - np.cosh(k))
    return start + t * (end - start) + shape * np.array([0.0, sag])


def ribbon(curve: np.ndarray, width: float) -> np.ndarray:
    """A thin polygon of `width` px around a polyline (one side out, the other back)."""
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * (width / 2)
    return np.concatenate([curve + normal, (curve - normal)[::-1]])


# --- drawing -------------------------------------------------------------------------------

class Canvas:
    """A float RGB image that shapes are painted on with supersampled (anti-aliased) coverage."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels.astype(np.float32)
        self.size = pixels.shape[0]

    def _paint(self, draw_fn, colour, opacity: float = 1.0) -> None:
        big = Image.new("L", (self.size * SUPERSAMPLE,) * 2, 0)
        draw_fn(ImageDraw.Draw(big), SUPERSAMPLE)
        alpha = np.asarray(big.resize((self.size,) * 2, Image.Resampling.BOX), dtype=np.float32)[..., None]
        alpha *= opacity / 255.0
        self.pixels = self.pixels * (1 - alpha) + np.asarray(colour, np.float32) * alpha

    def polygon(self, points: np.ndarray, colour, opacity: float = 1.0) -> None:
        self._paint(lambda d, s: d.polygon([tuple(p) for p in points * s], fill=255), colour, opacity)

    def lines(self, polylines: list[np.ndarray], width: float, colour, opacity: float = 1.0) -> None:
        def draw(d, s):
            for line in polylines:
                d.line([tuple(p) for p in line * s], fill=255, width=max(1, round(width * s)), joint="curve")
        self._paint(draw, colour, opacity)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random grid upsampled bicubically."""
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
    out = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(out, 0, 1)


# --- backgrounds ---------------------------------------------------------------------------

FIELD_COLOURS = ((92, 128, 58), (121, 150, 70), (168, 160, 92), (140, 118, 78), (74, 104, 52), (186, 176, 120))


def _fields(rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    region = np.zeros((size, size), np.int32)
    for k in range(rng.integers(1, 4)):  # random straight borders split the view into patches
        angle, offset = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8) * size
        region = region * 2 + ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle) > offset - size / 2)
    for r in np.unique(region):
        colour = np.array(FIELD_COLOURS[rng.integers(len(FIELD_COLOURS))], np.float32)
        angle, period = rng.uniform(0, np.pi), rng.uniform(5, 14)
        rows = 0.08 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        img[region == r] = (colour * (1 + rows[..., None]))[region == r]
    return img * (0.8 + 0.4 * smooth_noise(rng, size, 6))[..., None]


def _forest(rng, size):
    img = np.full((size, size, 3), (48, 72, 40), np.float32) * (0.7 + 0.6 * smooth_noise(rng, size, 8))[..., None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(size * size / 900)):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 20)
        tone = rng.uniform(0.6, 1.4)
        crown = np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2, 0, 1)[..., None]
        img = img * (1 - 0.6 * crown) + np.array((55, 90, 45), np.float32) * tone * 0.6 * crown
    return img


def _sky(rng, size):
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top, bottom = np.array((96, 146, 212), np.float32), np.array((196, 220, 240), np.float32)
    img = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    clouds = np.clip(smooth_noise(rng, size, 5) * 1.6 - 0.6, 0, 1)[..., None] * rng.uniform(0.3, 0.9)
    img = img * (1 - clouds) + 240 * clouds
    horizon = int(size * rng.uniform(0.75, 1.0))
    img[horizon:] = _fields(rng, size)[horizon:]
    return img


# --- distractors (never annotated) ---------------------------------------------------------

def _line_across(rng, size):
    """A straight line through the view, as two end points beyond its edges."""
    angle, centre = rng.uniform(0, np.pi), rng.uniform(0.15, 0.85, 2) * size
    d = np.array([np.cos(angle), np.sin(angle)]) * size * 1.5
    return centre - d, centre + d, np.array([-np.sin(angle), np.cos(angle)])


def road(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    half = rng.uniform(7, 15)
    canvas.polygon(np.array([a + n * half, b + n * half, b - n * half, a - n * half]), (118, 116, 112))
    length = np.linalg.norm(b - a)
    dash, gap = rng.uniform(8, 14), rng.uniform(8, 14)
    starts = np.arange(0, length, dash + gap)
    unit = (b - a) / length
    dashes = [np.array([a + unit * s, a + unit * (s + dash)]) for s in starts]
    canvas.lines(dashes, rng.uniform(1, 2.5), (235, 235, 225))
    for side in (-1, 1):
        canvas.lines([np.array([a + n * side * (half - 1.5), b + n * side * (half - 1.5)])], 1, (220, 220, 210))


def fence(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    colour = (rng.uniform(60, 110),) * 3
    canvas.lines([np.array([a, b]), np.array([a + n * 4, b + n * 4])], rng.uniform(1, 2), colour)
    unit = (b - a) / np.linalg.norm(b - a)
    posts = [np.array([a + unit * s - n * 2, a + unit * s + n * 6])
             for s in np.arange(0, np.linalg.norm(b - a), rng.uniform(12, 24))]
    canvas.lines(posts, 2, colour)


def branches(rng, canvas):
    size = canvas.size
    tone = rng.uniform(0.45, 0.7) if canvas.pixels.mean() > 110 else rng.uniform(1.6, 2.2)  # contrast
    for _ in range(rng.integers(2, 6)):
        start = rng.uniform(0, size, 2)
        bend = start + rng.uniform(-60, 60, 2)
        end = start + rng.uniform(-110, 110, 2)
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t ** 2 * end
        colour = np.array((rng.uniform(80, 100), rng.uniform(62, 72), 48)) * tone
        canvas.lines([curve], rng.uniform(1, 3), colour)
        fork = curve[rng.integers(6, 18)]
        canvas.lines([np.array([fork, fork + rng.uniform(-30, 30, 2)])], 1.5, colour)


def tracks(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    gap = rng.uniform(3, 6)
    canvas.lines([np.array([a, b]), np.array([a + n * gap, b + n * gap])], rng.uniform(1, 2.5), (52, 50, 40), 0.9)


# --- annotated objects ---------------------------------------------------------------------

def _place(points_fx, base, height, lean):
    """Map tower-local (x offset as a fraction of height, y fraction up) to image points."""
    local = np.asarray(points_fx, np.float64) * [height, -height]
    rot = np.array([[np.cos(lean), -np.sin(lean)], [np.sin(lean), np.cos(lean)]])
    return local @ rot.T + base


def lattice_tower(rng, canvas, base, height, lean):
    """A steel truss: legs, struts, X-bracing and two cross-arms. Returns (outline, arm tips)."""
    wb, wt, arms = rng.uniform(0.11, 0.15), rng.uniform(0.03, 0.05), ((0.74, 0.24), (0.9, 0.18))
    hw = lambda f: wb * (1 - f) + wt * f
    th = 0.025
    left = [(-hw(0), 0)]
    for f, reach in arms:
        left += [(-hw(f), f), (-reach, f), (-reach, f + th), (-hw(f + th), f + th)]
    left += [(-hw(1), 1)]
    outline_local = left + [(-x, f) for x, f in reversed(left)]
    outline = _place(outline_local, base, height, lean)
    levels = np.linspace(0, 1, 9)
    lines = [_place([(-hw(0), 0), (-hw(1), 1)], base, height, lean), _place([(hw(0), 0), (hw(1), 1)], base, height, lean)]
    for f0, f1 in zip(levels[:-1], levels[1:]):
        lines += [_place([(-hw(f0), f0), (hw(f0), f0)], base, height, lean),
                  _place([(-hw(f0), f0), (hw(f1), f1)], base, height, lean),
                  _place([(hw(f0), f0), (-hw(f1), f1)], base, height, lean)]
    tips = []
    for f, reach in arms:
        lines += [_place([(-reach, f), (reach, f)], base, height, lean),
                  _place([(-reach, f + th), (reach, f + th)], base, height, lean),
                  _place([(-reach, f), (-hw(f + th), f + th)], base, height, lean),
                  _place([(reach, f), (hw(f + th), f + th)], base, height, lean)]
        tips += [_place([(-reach, f)], base, height, lean)[0], _place([(reach, f)], base, height, lean)[0]]
    grey = rng.uniform(70, 120) if canvas.pixels.mean() > 110 else rng.uniform(150, 200)
    canvas.lines(lines, max(1.5, height / 110), (grey, grey, grey * 1.02))
    return outline, tips


def pole(rng, canvas, base, height, lean, wooden: bool):
    """A solid pole with a cross-arm near the top: tubular steel/concrete (tucohy) or wood."""
    wb, wt = (0.035, 0.028) if wooden else (rng.uniform(0.04, 0.06), rng.uniform(0.022, 0.03))
    f, reach, th = 0.9, rng.uniform(0.12, 0.2), 0.03
    hw = lambda g: wb * (1 - g) + wt * g
    left = [(-hw(0), 0), (-hw(f), f), (-reach, f), (-reach, f + th), (-hw(f + th), f + th), (-hw(1), 1)]
    outline = _place(left + [(-x, g) for x, g in reversed(left)], base, height, lean)
    if wooden:
        colour = np.array((rng.uniform(95, 125), rng.uniform(65, 85), rng.uniform(35, 50)))
    else:
        colour = np.array((rng.uniform(170, 215),) * 3) * np.array([1.0, 1.0, 1.03])
    canvas.polygon(outline, colour)
    shade = _place([(-hw(0) * 0.2, 0), (hw(0), 0), (hw(1), 1), (-hw(1) * 0.2, 1)], base, height, lean)
    canvas.polygon(shade, colour * 0.7, 0.6)
    tips = [_place([(-reach, f)], base, height, lean)[0], _place([(reach, f)], base, height, lean)[0]]
    return outline, tips


def cable_group(rng, canvas, size, anchors):
    """1-6 parallel sagging cables; from tower arm tips outwards when `anchors` are given."""
    shapes = []
    dark = canvas.pixels.mean() > 110
    colour = (rng.uniform(35, 75),) * 3 if dark else (rng.uniform(185, 225),) * 3
    if anchors:
        direction = rng.choice([-1, 1])
        starts = [np.asarray(a) for a in anchors]
        ends = [a + np.array([direction * size * 1.6, rng.uniform(-0.4, 0.4) * size]) for a in starts]
    else:
        a, b, n = _line_across(rng, size)
        count = int(rng.integers(1, 7))
        spacing = rng.uniform(6, 18)
        starts = [a + n * spacing * k for k in range(count)]
        ends = [b + n * spacing * k for k in range(count)]
    sag = rng.uniform(0.02, 0.15) * size
    for start, end in zip(starts, ends):
        width = float(rng.choice([1, 1.5, 2, 2.5, 3, 4, 5, 6], p=[.1, .15, .2, .15, .15, .1, .08, .07]))
        curve = catenary(start, end, sag)
        canvas.lines([curve], width, colour)
        outline = clip_polygon(ribbon(curve, width + 0.6), size)
        if len(outline) >= 3 and np.ptp(outline, axis=0).max() > 4:
            shapes.append(("cable", outline))
    return shapes


# --- one image -----------------------------------------------------------------------------

def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One image (uint8 RGB) and its annotated shapes [(label, polygon)]."""
    scene = rng.choice(["fields", "road", "forest", "sky"], p=[0.3, 0.3, 0.2, 0.2])
    background = {"fields": _fields, "road": _fields, "forest": _forest, "sky": _sky}[scene](rng, size)
    canvas = Canvas(background)
    distractors = {"fields": [tracks, fence], "road": [road, fence], "forest": [branches], "sky": [branches]}[scene]
    for k in rng.permutation(len(distractors)):  # at least one, the others now and then
        if k == 0 or rng.random() < 0.6:
            distractors[k](rng, canvas)
    shapes: list[tuple[str, np.ndarray]] = []
    for _ in range(rng.choice([0, 1, 1, 2])):
        kind = rng.choice(["tower_lattice", "tower_tucohy", "tower_wooden"])
        height = rng.uniform(0.45, 0.9) * size
        base = np.array([rng.uniform(0.15, 0.85) * size, rng.uniform(0.85, 1.05) * size])
        lean = rng.uniform(-0.1, 0.1)
        if kind == "tower_lattice":
            outline, tips = lattice_tower(rng, canvas, base, height, lean)
        else:
            outline, tips = pole(rng, canvas, base, height, lean, wooden=kind == "tower_wooden")
        clipped = clip_polygon(outline, size)
        if len(clipped) >= 3:
            shapes.append((kind, clipped))
        shapes += cable_group(rng, canvas, size, [t for t in tips if (0 <= t).all() and (t <= size).all()])
    if not shapes or rng.random() < 0.6:
        shapes += cable_group(rng, canvas, size, [])
    if rng.random() < 0.2:  # a faint, far cable nobody could label reliably: void
        a, b, _ = _line_across(rng, size)
        curve = catenary(a, b, rng.uniform(0.02, 0.1) * size)
        canvas.lines([curve], 1, (150, 150, 150), 0.35)
        area = clip_polygon(ribbon(curve, 12), size)
        if len(area) >= 3:
            shapes.append(("void", area))
    img = Image.fromarray(np.clip(canvas.pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    pixels = np.asarray(img, np.float32) + rng.normal(0, 3.0, (size, size, 3))
    return np.clip(pixels, 0, 255).round().astype(np.uint8), shapes


def labelme_document(rng, stem: str, image: np.ndarray, shapes) -> dict:
    """TTPLA-style labelme JSON: one of three versions, `Cable` now and then, stale `imageData`."""
    size = image.shape[0]
    version = LABELME_VERSIONS[rng.integers(len(LABELME_VERSIONS))]
    cable_label = "Cable" if rng.random() < 0.3 else "cable"
    out_shapes = []
    for label, polygon in shapes:
        pts = polygon.copy()
        edge = (pts <= 0) | (pts >= size)  # annotators' float edges: a hair outside or inside
        pts[edge] += rng.uniform(-0.3, 0.3, edge.sum())
        shape = {"label": cable_label if label == "cable" else label,
                 "points": [[float(x), float(y)] for x, y in pts]}
        if version == "4.5.6":
            shape["group_id"] = None
        else:
            shape["line_color"], shape["fill_color"] = None, None
        shape["shape_type"], shape["flags"] = "polygon", {}
        out_shapes.append(shape)
    doc: dict = {"version": version, "flags": {}, "shapes": out_shapes}
    if version != "4.5.6":
        doc["lineColor"], doc["fillColor"] = [0, 255, 0, 128], [255, 0, 0, 128]
    doc["imagePath"] = f"{stem}.jpg"
    if rng.random() < 0.7:  # stale: a small thumbnail of another size, never to be trusted
        thumb = io.BytesIO()
        Image.fromarray(image).resize((48, 27)).save(thumb, format="JPEG", quality=60)
        doc["imageData"] = base64.b64encode(thumb.getvalue()).decode("ascii")
    else:
        doc["imageData"] = None
    doc["imageHeight"], doc["imageWidth"] = size, size
    return doc


def write_image(out_dir: Path, stem: str, seed: int, index: int, size: int) -> None:
    rng = np.random.default_rng([seed, index])
    image, shapes = render(rng, size)
    Image.fromarray(image).save(out_dir / f"{stem}.jpg", format="JPEG", quality=92)
    doc = labelme_document(rng, stem, image, shapes)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def generate(out_dir: str | Path, num_images: int = 60, size: int = 320, seed: int = 0) -> Path:
    """Write `num_images` images + labelme JSONs into `out_dir`, atomically (a temporary folder
    renamed at the end); an existing `out_dir` is reused as is, never rewritten."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        return out_dir
    if num_images < 1 or size < 64:
        raise ValueError(f"data.generator: need num_images >= 1 and size >= 64, got {num_images}, {size}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        for index in tqdm(range(num_images), desc="generating synthetic TTPLA", unit="img"):
            write_image(tmp, f"synth_{index:04d}", seed, index, size)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
