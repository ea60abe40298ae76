"""The embedded default dataset: seeded, TTPLA-like aerial images in TTPLA's labelme layout.

Each image has an aerial-looking background (fields, roads, forest, sky), annotated objects
(catenary cables 1-6 px wide, often several in parallel; lattice, tucohy and wooden towers)
and unannotated cable-like distractors (road markings, fences, branches, field tracks): the
"perplexed objects" a segmentation model confuses with cables. Labels carry TTPLA's quirks
(mixed case, three labelme versions, stale or null `imageData`, points a hair outside the image,
some `void` shapes). Shapes are drawn with 4x supersampling from the very polygons written to
the JSON. The same arguments give byte-identical files.

Generated data knows the truth that real annotations only approximate. Beside the labelme
files (what an annotator drew, and what training reads), `truth/<stem>.json` holds every object
as drawn, the unannotated distractors included (label `distractor`). An `AnnotationNoise`
makes the annotation worse than the truth the way real annotators do (thinner or shifted cable
ribbons, cables left out), seeded apart from the image, so the image and the truth never
depend on the noise; with no noise the labelme files are exactly what they always were.
"""
from __future__ import annotations

import base64
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from vqi.utils.progress import progress

SUPERSAMPLE = 4
LABELME_VERSIONS = ("3.16.7", "4.2.7", "4.5.6")
TRUTH_DIR = "truth"
"""Subfolder of the generated folder with the true shapes (labelme files never read as labels)."""
DISTRACTOR = "distractor"
"""Label of an unannotated cable-like object in the truth files (the paper's perplexed objects)."""
CABLE_ALLOWANCE = 0.6
"""px added to a cable's drawn width for its ribbon polygon: the anti-aliased fringe."""


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


def normals(curve: np.ndarray) -> np.ndarray:
    """Unit normals of a polyline at its points."""
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    return np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


def ribbon(curve: np.ndarray, width: float) -> np.ndarray:
    """A thin polygon of `width` px around a polyline (one side out, the other back)."""
    normal = normals(curve) * (width / 2)
    return np.concatenate([curve + normal, (curve - normal)[::-1]])


def ribbons(polylines: list[np.ndarray], width: float, size: int) -> list[np.ndarray]:
    """The clipped ribbon polygons of drawn lines (a distractor's true shape), small ones left out."""
    out = []
    for line in polylines:
        outline = clip_polygon(ribbon(np.asarray(line, np.float64), width), size)
        if len(outline) >= 3 and np.ptp(outline, axis=0).max() > 2:
            out.append(outline)
    return out


# --- drawing -------------------------------------------------------------------------------

class Canvas:
    """A float RGB image that shapes are painted on with supersampled (anti-aliased) coverage."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels.astype(np.float32)
        self.size = pixels.shape[0]

    def _paint(self, draw_fn, colour, opacity: float = 1.0) -> None:
        """Blend `colour` by the shape's coverage, inside the coverage's bounding box only:
        outside it the coverage is 0 and the blend would leave every pixel as it is."""
        big = Image.new("L", (self.size * SUPERSAMPLE,) * 2, 0)
        draw_fn(ImageDraw.Draw(big), SUPERSAMPLE)
        coverage = big.resize((self.size,) * 2, Image.Resampling.BOX)
        box = coverage.getbbox()   # of the whole resize: Pillow's BOX of a crop can differ by 1
        if box is None:
            return
        rows, cols = slice(box[1], box[3]), slice(box[0], box[2])
        alpha = np.asarray(coverage, dtype=np.float32)[rows, cols, None]
        alpha *= opacity / 255.0
        self.pixels[rows, cols] = self.pixels[rows, cols] * (1 - alpha) + np.asarray(colour, np.float32) * alpha

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
        # The crown is 0 farther than r from its centre, where blending changes nothing: only
        # its box (2 px to spare) is computed, so the cost grows with the crowns, not size^4.
        rows = slice(max(0, int(cy - r) - 2), min(size, int(cy + r) + 3))
        cols = slice(max(0, int(cx - r) - 2), min(size, int(cx + r) + 3))
        crown = np.clip(1 - ((xx[rows, cols] - cx) ** 2 + (yy[rows, cols] - cy) ** 2) / r ** 2, 0, 1)[..., None]
        img[rows, cols] = img[rows, cols] * (1 - 0.6 * crown) + np.array((55, 90, 45), np.float32) * tone * 0.6 * crown
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


# Each draws on the canvas and returns the true polygons of its cable-like parts.

def road(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    half = rng.uniform(7, 15)
    canvas.polygon(np.array([a + n * half, b + n * half, b - n * half, a - n * half]), (118, 116, 112))
    length = np.linalg.norm(b - a)
    dash, gap = rng.uniform(8, 14), rng.uniform(8, 14)
    starts = np.arange(0, length, dash + gap)
    unit = (b - a) / length
    dashes = [np.array([a + unit * s, a + unit * (s + dash)]) for s in starts]
    width = rng.uniform(1, 2.5)
    canvas.lines(dashes, width, (235, 235, 225))
    edges = [np.array([a + n * side * (half - 1.5), b + n * side * (half - 1.5)]) for side in (-1, 1)]
    for edge in edges:
        canvas.lines([edge], 1, (220, 220, 210))
    return ribbons(dashes, width, canvas.size) + ribbons(edges, 1, canvas.size)


def fence(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    colour = (rng.uniform(60, 110),) * 3
    wires, width = [np.array([a, b]), np.array([a + n * 4, b + n * 4])], rng.uniform(1, 2)
    canvas.lines(wires, width, colour)
    unit = (b - a) / np.linalg.norm(b - a)
    posts = [np.array([a + unit * s - n * 2, a + unit * s + n * 6])
             for s in np.arange(0, np.linalg.norm(b - a), rng.uniform(12, 24))]
    canvas.lines(posts, 2, colour)
    return ribbons(wires, width, canvas.size) + ribbons(posts, 2, canvas.size)


def branches(rng, canvas):
    size = canvas.size
    tone = rng.uniform(0.45, 0.7) if canvas.pixels.mean() > 110 else rng.uniform(1.6, 2.2)  # contrast
    polygons = []
    for _ in range(rng.integers(2, 6)):
        start = rng.uniform(0, size, 2)
        bend = start + rng.uniform(-60, 60, 2)
        end = start + rng.uniform(-110, 110, 2)
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t ** 2 * end
        colour = np.array((rng.uniform(80, 100), rng.uniform(62, 72), 48)) * tone
        width = rng.uniform(1, 3)
        canvas.lines([curve], width, colour)
        fork = curve[rng.integers(6, 18)]
        twig = np.array([fork, fork + rng.uniform(-30, 30, 2)])
        canvas.lines([twig], 1.5, colour)
        polygons += ribbons([curve], width, size) + ribbons([twig], 1.5, size)
    return polygons


def tracks(rng, canvas):
    a, b, n = _line_across(rng, canvas.size)
    gap = rng.uniform(3, 6)
    ruts, width = [np.array([a, b]), np.array([a + n * gap, b + n * gap])], rng.uniform(1, 2.5)
    canvas.lines(ruts, width, (52, 50, 40), 0.9)
    return ribbons(ruts, width, canvas.size)


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


@dataclass(frozen=True)
class Cable:
    """A drawn cable: its centre line and drawn width (px), from which any annotation of it is made."""
    curve: np.ndarray
    width: float


def cable_group(rng, canvas, size, anchors):
    """1-6 parallel sagging cables; from tower arm tips outwards when `anchors` are given.
    Returns [("cable", true polygon, Cable)]."""
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
        outline = cable_outline(curve, width, size)
        if outline is not None:
            shapes.append(("cable", outline, Cable(curve, width)))
    return shapes


def cable_outline(curve: np.ndarray, width: float, size: int) -> np.ndarray | None:
    """The clipped ribbon of a cable `width` px wide (+ the anti-aliased fringe); None when too small."""
    outline = clip_polygon(ribbon(curve, width + CABLE_ALLOWANCE), size)
    return outline if len(outline) >= 3 and np.ptp(outline, axis=0).max() > 4 else None


# --- annotation noise ----------------------------------------------------------------------

NOISE_STREAM = 1
"""Third seed word of the noise generator: noise draws never touch the image's own stream."""
WIDTH_STREAM = 2
"""Fourth seed word of the width-factor generator (`[seed, index, NOISE_STREAM, WIDTH_STREAM]`):
a factor drawn per cable leaves the noise stream's draws, and so every fixed-factor file, as
they were before factors could be drawn."""


def _number(key: str, value) -> float:
    """`value` as a float, or a ValueError naming the config key `noise.<key>`."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"noise.{key} must be a number, got {value!r}")


def width_factor_range(value) -> tuple[float, float]:
    """`noise.cable_width_factor` as (low, high): a number f is (f, f); a sequence of two
    numbers (a list, a tuple, Hydra's ListConfig) is a range to draw each cable's factor from."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        low = high = _number("cable_width_factor", value)
    else:
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"noise.cable_width_factor must be a number or a range [low, high] of two "
                             f"numbers, got {value!r}")
        low, high = (_number("cable_width_factor", v) for v in items)
    if not 0 < low <= high:
        raise ValueError(f"noise.cable_width_factor must be > 0 (a range [low, high]: 0 < low <= high), "
                         f"got {value!r}")
    return low, high


@dataclass(frozen=True)
class AnnotationNoise:
    """How an annotator's cable labels differ from the truth (all off by default).

    `cable_width_factor`: annotated width = factor x drawn width (at least 1 px); a number, or
    a range `[low, high]` that each cable's factor is drawn from uniformly, so the annotated
    width does not tell how wide the cable truly is (a fixed factor does: width / factor);
    `cable_offset_px`: the annotated centre line is shifted sideways by up to this many px;
    `cable_missing`: the share of cable instances left unannotated.
    """
    cable_width_factor: float | tuple[float, float] = 1.0
    cable_offset_px: float = 0.0
    cable_missing: float = 0.0

    def __post_init__(self):
        low, high = width_factor_range(self.cable_width_factor)
        object.__setattr__(self, "cable_width_factor", low if low == high else (low, high))
        object.__setattr__(self, "cable_offset_px", _number("cable_offset_px", self.cable_offset_px))
        object.__setattr__(self, "cable_missing", _number("cable_missing", self.cable_missing))
        if not self.cable_offset_px >= 0:
            raise ValueError(f"noise.cable_offset_px must be >= 0, got {self.cable_offset_px}")
        if not 0 <= self.cable_missing < 1:
            raise ValueError(f"noise.cable_missing must be in [0, 1), got {self.cable_missing}")

    @property
    def width_range(self) -> tuple[float, float]:
        """(low, high) of the width factor; low == high for a fixed factor."""
        return width_factor_range(self.cable_width_factor)

    def annotate(self, rng: np.random.Generator, shapes, size: int,
                 width_rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
        """The annotator's shapes [(label, polygon)] from the true ones [(label, polygon, Cable|None)].

        Two draws per cable from `rng` and one from `width_rng` whatever the settings, so one
        seed leaves out the same cables and shifts them the same way at every width setting (a
        dose-response compares like with like), and a fixed factor gives what it always gave.
        """
        low, high = self.width_range
        out = []
        for label, polygon, cable in shapes:
            if cable is None:
                out.append((label, polygon))
                continue
            left_out, shift = rng.random(), rng.uniform(-1.0, 1.0)
            factor = width_rng.uniform(low, high)   # exactly `low` when low == high
            if left_out < self.cable_missing:
                continue
            curve = cable.curve + normals(cable.curve) * (shift * self.cable_offset_px)
            outline = cable_outline(curve, max(1.0, factor * cable.width), size)
            if outline is not None:
                out.append((label, outline))
        return out


# --- one image -----------------------------------------------------------------------------

def render(rng: np.random.Generator, size: int):
    """One image (uint8 RGB), its true shapes [(label, polygon, Cable or None)] and the true
    polygons of its distractors."""
    scene = rng.choice(["fields", "road", "forest", "sky"], p=[0.3, 0.3, 0.2, 0.2])
    background = {"fields": _fields, "road": _fields, "forest": _forest, "sky": _sky}[scene](rng, size)
    canvas = Canvas(background)
    drawers = {"fields": [tracks, fence], "road": [road, fence], "forest": [branches], "sky": [branches]}[scene]
    distractors: list[np.ndarray] = []
    for k in rng.permutation(len(drawers)):  # at least one, the others now and then
        if k == 0 or rng.random() < 0.6:
            distractors += drawers[k](rng, canvas)
    shapes: list = []
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
            shapes.append((kind, clipped, None))
        shapes += cable_group(rng, canvas, size, [t for t in tips if (0 <= t).all() and (t <= size).all()])
    if not shapes or rng.random() < 0.6:
        shapes += cable_group(rng, canvas, size, [])
    if rng.random() < 0.2:  # a faint, far cable nobody could label reliably: void
        a, b, _ = _line_across(rng, size)
        curve = catenary(a, b, rng.uniform(0.02, 0.1) * size)
        canvas.lines([curve], 1, (150, 150, 150), 0.35)
        area = clip_polygon(ribbon(curve, 12), size)
        if len(area) >= 3:
            shapes.append(("void", area, None))
    img = Image.fromarray(np.clip(canvas.pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    pixels = np.asarray(img, np.float32) + rng.normal(0, 3.0, (size, size, 3))
    return np.clip(pixels, 0, 255).round().astype(np.uint8), shapes, distractors


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


def truth_document(stem: str, size: int, shapes) -> dict:
    """The true shapes [(label, polygon)] as a plain labelme file (no quirks: nobody drew it)."""
    return {"version": "4.5.6", "flags": {},
            "shapes": [{"label": label, "points": [[float(x), float(y)] for x, y in polygon],
                        "group_id": None, "shape_type": "polygon", "flags": {}} for label, polygon in shapes],
            "imagePath": f"../{stem}.jpg", "imageData": None, "imageHeight": size, "imageWidth": size}


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_image(out_dir: Path, stem: str, seed: int, index: int, size: int,
                noise: AnnotationNoise = AnnotationNoise()) -> None:
    rng = np.random.default_rng([seed, index])
    image, shapes, distractors = render(rng, size)
    Image.fromarray(image).save(out_dir / f"{stem}.jpg", format="JPEG", quality=92)
    annotated = noise.annotate(np.random.default_rng([seed, index, NOISE_STREAM]), shapes, size,
                               np.random.default_rng([seed, index, NOISE_STREAM, WIDTH_STREAM]))
    _write_json(out_dir / f"{stem}.json", labelme_document(rng, stem, image, annotated))
    truth = [(label, polygon) for label, polygon, _ in shapes] + [(DISTRACTOR, d) for d in distractors]
    _write_json(out_dir / TRUTH_DIR / f"{stem}.json", truth_document(stem, size, truth))


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_one(args: tuple) -> None:
    write_image(*args)


def generate(out_dir: str | Path, num_images: int = 60, size: int = 320, seed: int = 0,
             noise: Mapping[str, object] | AnnotationNoise | None = None, workers: int | None = None) -> Path:
    """Write `num_images` images + labelme JSONs (the annotation, with `noise`) into `out_dir`
    and their truth into `out_dir/truth/`, atomically (a temporary folder renamed at the end);
    an existing `out_dir` is reused as is, never rewritten.

    Every image draws from its own seed `[seed, index]`, so `workers` processes (None: the
    machine's cores; 0 or 1: this process) write the same bytes as one, in any order.
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        return out_dir
    if num_images < 1 or size < 64:
        raise ValueError(f"data.generator: need num_images >= 1 and size >= 64, got {num_images}, {size}")
    workers = machine_cores() if workers is None else int(workers)
    if workers < 0:
        raise ValueError(f"data.generator.workers: need >= 0 (0 or 1: no worker processes), got {workers}")
    if not isinstance(noise, AnnotationNoise):
        noise = AnnotationNoise(**dict(noise or {}))   # it checks and converts each value
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        (tmp / TRUTH_DIR).mkdir()
        jobs = [(tmp, f"synth_{index:04d}", seed, index, size, noise) for index in range(num_images)]
        bar = dict(total=num_images, desc="generating synthetic TTPLA", unit="img")
        if min(workers, num_images) <= 1:
            for job in progress(jobs, **bar):
                _write_one(job)
        else:  # spawn: the parent may hold torch's threads, which a fork would copy half-way
            with multiprocessing.get_context("spawn").Pool(min(workers, num_images)) as pool:
                for _ in progress(pool.imap_unordered(_write_one, jobs), **bar):
                    pass
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
