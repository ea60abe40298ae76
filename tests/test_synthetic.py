"""The generated TTPLA-like dataset: seeded and byte-identical, TTPLA's labelme quirks,
every class and void present, cables thin."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFilter

from data_factory import CLASS_MAP, tree_digest
from vqi.data.coco import scaled_annotations
from vqi.data.labelme import LabelmeFolder
from vqi.data.rasterize import rasterize
from vqi.data.synthetic import clip_polygon, generate


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "raw", num_images=16, size=320, seed=3)


def test_same_seed_gives_byte_identical_files(tmp_path, raw):
    again = generate(tmp_path / "again", num_images=16, size=320, seed=3)
    assert digests(again) == digests(raw) and len(digests(raw)) == 32
    other = generate(tmp_path / "other", num_images=2, size=320, seed=4)
    assert digests(other)["synth_0000.jpg"] != digests(raw)["synth_0000.jpg"]


def test_existing_folder_is_reused_untouched(raw):
    before = tree_digest(raw)
    assert generate(raw, num_images=16, size=320, seed=3) == raw
    assert tree_digest(raw) == before
    assert not list(raw.parent.glob(".raw.tmp-*"))


def test_labelme_quirks_of_ttpla(raw):
    docs = [json.loads(p.read_text()) for p in sorted(raw.glob("*.json"))]
    assert {d["version"] for d in docs} == {"3.16.7", "4.2.7", "4.5.6"}
    labels = Counter(s["label"] for d in docs for s in d["shapes"])
    assert labels["Cable"] > 0 and labels["cable"] > 0 and labels["void"] > 0
    assert {s["shape_type"] for d in docs for s in d["shapes"]} == {"polygon"}
    assert any(d["imageData"] is None for d in docs)
    stale = [d for d in docs if d["imageData"]]
    assert stale and all(Image.open(io.BytesIO(base64.b64decode(d["imageData"]))).size != (320, 320) for d in stale)
    for d in docs:
        new = d["version"] == "4.5.6"
        assert all(("group_id" in s) == new and ("line_color" in s) != new for s in d["shapes"])
    points = np.array([p for d in docs for s in d["shapes"] for p in s["points"]])
    assert points.min() < 0 and points.max() > 320 and points.min() > -1 and points.max() < 321


def test_every_class_appears_and_the_reader_accepts_all(raw):
    source = LabelmeFolder(raw, CLASS_MAP)
    samples = [source.load(s) for s in source.stems()]
    labels = Counter(s.label for sample in samples for s in sample.shapes)
    assert set(labels) == set(CLASS_MAP) and labels["cable"] >= 16
    assert all(sample.image.shape == (320, 320, 3) for sample in samples)


def test_cables_are_1_to_6_px_wide(raw):
    source = LabelmeFolder(raw, CLASS_MAP)
    widths = []
    for stem in source.stems():
        for shape in source.load(stem).shapes:
            if shape.label == "cable":
                poly = shape.polygons[0]
                area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
                length = np.linalg.norm(np.diff(poly[: len(poly) // 2], axis=0), axis=1).sum()
                if length > 100:
                    widths.append(area / length)
    assert 1.0 <= min(widths) and max(widths) <= 7.0 and np.median(widths) < 4.5


def test_every_image_has_unannotated_cable_like_lines(raw):
    """Distractors: thin high-contrast structures (line minus its 7x7 median) away from any
    annotated object, in every image."""
    source = LabelmeFolder(raw, CLASS_MAP)
    for stem in source.stems():
        sample = source.load(stem)
        mask = rasterize(scaled_annotations(sample, 320, "ignore", 1, 1), 320, 320)
        near_objects = np.asarray(Image.fromarray((mask > 0).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(7))) > 0
        grey = Image.fromarray(sample.image).convert("L")
        contrast = np.abs(np.asarray(grey, float) - np.asarray(grey.filter(ImageFilter.MedianFilter(7)), float))
        assert (contrast[~near_objects] > 25).sum() >= 100, stem


def test_clip_polygon_keeps_inside_and_cuts_outside():
    clipped = clip_polygon(np.array([[-10., 5], [50, 5], [50, 8], [-10, 8]]), 20)
    assert clipped[:, 0].min() == 0 and clipped[:, 0].max() == 20
    np.testing.assert_allclose(clip_polygon(np.array([[1., 1], [5, 1], [5, 5]]), 20), [[1, 1], [5, 1], [5, 5]])
