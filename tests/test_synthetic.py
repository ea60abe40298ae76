"""The generated TTPLA-like dataset: seeded and byte-identical, TTPLA's labelme quirks,
every class and void present, cables thin."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from data_factory import CLASS_MAP, generated_content, tree_digest
from vqi.data.coco import scaled_annotations
from vqi.data.labelme import LabelmeFolder
from vqi.data.rasterize import rasterize
from omegaconf import OmegaConf

from vqi.data import synthetic
from vqi.data.synthetic import (CABLE_ALLOWANCE, NOISE_STREAM, WIDTH_STREAM, AnnotationNoise, cable_outline,
                                clip_polygon, generate, normals, render)


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "raw", num_images=16, size=320, seed=3)


def test_same_seed_gives_byte_identical_files(tmp_path, raw):
    again = generate(tmp_path / "again", num_images=16, size=320, seed=3)
    assert digests(again) == digests(raw) and len(digests(raw)) == 48  # images, labels, truth
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


# --- annotation noise and truth --------------------------------------------------------------

BEFORE_NOISE = Path(__file__).parent / "fixtures" / "generated_n6_s128_seed7.json"
"""`generated_content` of `generate(n=6, size=128, seed=7)` with no noise: the labelme points and
decoded pixels of the generator before annotation noise existed (commit fddf3ea; the top-level
files still hashed to that commit's digest when the fixture was written, with pillow 11.3, 12.3
and 13.0 alike), and the truth files added since. Bytes are not compared across environments: a JPEG or resampling patch
release may change them without changing the data."""


def test_no_noise_writes_the_content_of_before_plus_the_truth(tmp_path):
    out = generate(tmp_path / "none", num_images=6, size=128, seed=7, noise={"cable_width_factor": 1.0})
    assert sorted(p.name for p in (out / "truth").iterdir()) == [f"synth_{i:04d}.json" for i in range(6)]
    got, before = generated_content(out), json.loads(BEFORE_NOISE.read_text())
    assert sorted(got) == sorted(before)
    for name, expected in before.items():
        if name.endswith(".json"):                 # the same shapes, points to 1e-6
            assert [label for label, _ in got[name]] == [label for label, _ in expected], name
            for (_, points), (_, want) in zip(got[name], expected):
                np.testing.assert_allclose(points, want, rtol=0, atol=1e-6, err_msg=name)
        else:                                      # the same picture, each block within one grey level
            assert got[name]["size"] == expected["size"]
            np.testing.assert_allclose(got[name]["block_means"], expected["block_means"], rtol=0, atol=1.0,
                                       err_msg=name)


def test_no_noise_writes_the_same_bytes_as_no_noise_settings_in_one_environment(tmp_path):
    """Within one environment (one set of library releases) the claim is byte-identity."""
    plain = generate(tmp_path / "plain", num_images=3, size=96, seed=7, workers=1)
    none = generate(tmp_path / "none", num_images=3, size=96, seed=7, workers=1, noise={"cable_width_factor": 1.0,
                    "cable_offset_px": 0.0, "cable_missing": 0.0})
    assert digests(plain) == digests(none)


def _label_masks(folder, stem, labels, size):
    """Union mask per label of one labelme file, rasterised as prepare does."""
    doc = json.loads((folder / f"{stem}.json").read_text())
    out = {}
    for label in labels:
        polys = [np.clip(np.array(s["points"]), 0, size) for s in doc["shapes"] if s["label"].lower() == label]
        anns = [{"category_id": 1, "segmentation": [p.ravel().tolist()]} for p in polys]
        out[label] = rasterize(anns, size, size) == 1 if anns else np.zeros((size, size), bool)
    return out


def test_noisy_annotation_lies_inside_the_truth_and_misses_some_cables(tmp_path):
    noise = {"cable_width_factor": 0.5, "cable_offset_px": 0.0, "cable_missing": 0.3}
    noisy = generate(tmp_path / "noisy", num_images=12, size=160, seed=5, noise=noise)
    clean = generate(tmp_path / "clean", num_images=12, size=160, seed=5)
    annotated = truth = 0
    inside = 0
    for i in range(12):
        stem = f"synth_{i:04d}"
        assert (noisy / f"{stem}.jpg").read_bytes() == (clean / f"{stem}.jpg").read_bytes()  # same image
        assert (noisy / "truth" / f"{stem}.json").read_bytes() == (clean / "truth" / f"{stem}.json").read_bytes()
        a = _label_masks(noisy, stem, ["cable"], 160)["cable"]
        t = _label_masks(noisy / "truth", stem, ["cable"], 160)["cable"]
        annotated, truth, inside = annotated + a.sum(), truth + t.sum(), inside + (a & t).sum()
    assert inside >= 0.99 * annotated          # the annotation's cable pixels are true cable pixels ...
    assert truth > 1.5 * annotated             # ... and the truth holds many more
    count = lambda folder: sum(s["label"].lower() == "cable" for p in folder.glob("*.json")
                               for s in json.loads(p.read_text())["shapes"])
    kept = count(noisy) / count(noisy / "truth")
    assert 0.55 < kept < 0.85                  # about 30% of the cables left out
    truth_labels = Counter(s["label"] for p in (noisy / "truth").glob("*.json")
                           for s in json.loads(p.read_text())["shapes"])
    assert truth_labels["distractor"] > 12 and "Cable" not in truth_labels


def test_the_same_seed_leaves_out_the_same_cables_at_every_width(tmp_path):
    def cable_count(factor):
        out = generate(tmp_path / f"w{factor}", num_images=6, size=128, seed=9,
                       noise={"cable_width_factor": factor, "cable_missing": 0.4})
        return [sum(s["label"].lower() == "cable" for s in json.loads(p.read_text())["shapes"])
                for p in sorted(out.glob("*.json"))]
    assert cable_count(0.3) == cable_count(0.8)


def _ribbon_width(poly):
    """Mean width of a thin ribbon polygon: 2 x area / perimeter (its ends are short)."""
    area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
    perimeter = np.linalg.norm(np.diff(np.vstack([poly, poly[:1]]), axis=0), axis=1).sum()
    return 2 * area / perimeter, perimeter


def _width_factors(folder):
    """Per cable, annotated width / true width measured from the files (annotation and truth list
    the cables in the same order when none is missing or shifted). Only long cables drawn 4-6 px
    wide: factor x width stays above the 1-px floor for any factor >= 0.25."""
    out = []
    for path in sorted(folder.glob("*.json")):
        cables = lambda p: [np.array(s["points"]) for s in json.loads(p.read_text())["shapes"]
                            if s["label"].lower() == "cable"]
        annotated, true = cables(path), cables(folder / "truth" / path.name)
        assert len(annotated) == len(true), path.name
        for a, t in zip(annotated, true):
            true_width, perimeter = _ribbon_width(t)
            if true_width - CABLE_ALLOWANCE >= 3.5 and perimeter > 100:
                out.append((_ribbon_width(a)[0] - CABLE_ALLOWANCE) / (true_width - CABLE_ALLOWANCE))
    return np.array(out)


def test_a_width_range_draws_each_cables_factor_reproducibly(tmp_path):
    """[0.3, 1.0]: each cable's annotated / true width somewhere in the range, spread over it,
    the same for the same seed; a fixed 0.5 (the control) measures 0.5 on every cable."""
    kwargs = dict(num_images=24, size=160, seed=5, workers=1)
    ranged = generate(tmp_path / "range", noise={"cable_width_factor": [0.3, 1.0]}, **kwargs)
    factors = _width_factors(ranged)
    assert len(factors) >= 15
    assert 0.28 <= factors.min() and factors.max() <= 1.03                 # inside the range ...
    assert factors.min() < 0.45 and factors.max() > 0.85 and factors.std() > 0.1   # ... and over it
    assert len(np.unique(factors.round(2))) >= 0.8 * len(factors)           # one factor per cable
    again = generate(tmp_path / "again", noise={"cable_width_factor": (0.3, 1.0)}, **kwargs)
    assert digests(again) == digests(ranged)
    fixed = _width_factors(generate(tmp_path / "fixed", noise={"cable_width_factor": 0.5}, **kwargs))
    assert len(fixed) == len(factors) and np.all(np.abs(fixed - 0.51) < 0.02)


def test_a_fixed_factor_writes_the_same_files_as_a_range_of_that_one_value(tmp_path):
    noise = {"cable_offset_px": 1.0, "cable_missing": 0.2}
    number = generate(tmp_path / "number", num_images=4, size=96, seed=7, workers=1,
                      noise={"cable_width_factor": 0.5, **noise})
    interval = generate(tmp_path / "range", num_images=4, size=96, seed=7, workers=1,
                        noise={"cable_width_factor": OmegaConf.create([0.5, 0.5]), **noise})  # as Hydra gives it
    assert digests(number) == digests(interval)


def _annotate_as_before_ranges(noise_rng, shapes, size, factor, offset, missing):
    """AnnotationNoise.annotate as it was before width ranges (commit 6b9398e): two draws per
    cable from the noise stream, one fixed factor."""
    out = []
    for label, polygon, cable in shapes:
        if cable is None:
            out.append((label, polygon))
            continue
        left_out, shift = noise_rng.random(), noise_rng.uniform(-1.0, 1.0)
        if left_out < missing:
            continue
        curve = cable.curve + normals(cable.curve) * (shift * offset)
        outline = cable_outline(curve, max(1.0, factor * cable.width), size)
        if outline is not None:
            out.append((label, outline))
    return out


def test_a_fixed_factor_annotates_exactly_as_before_ranges_existed():
    """The width factor's own stream leaves the noise stream's draws as they were."""
    noise = AnnotationNoise(cable_width_factor=0.5, cable_offset_px=1.0, cable_missing=0.2)
    compared = 0
    for index in range(6):
        _, shapes, _ = render(np.random.default_rng([3, index]), 128)
        stream = [3, index, NOISE_STREAM]
        got = noise.annotate(np.random.default_rng(stream), shapes, 128, np.random.default_rng([*stream, WIDTH_STREAM]))
        want = _annotate_as_before_ranges(np.random.default_rng(stream), shapes, 128, 0.5, 1.0, 0.2)
        assert [label for label, _ in got] == [label for label, _ in want]
        for (_, a), (_, b) in zip(got, want):
            assert np.array_equal(a, b)
        compared += sum(label == "cable" for label, _ in got)
    assert compared >= 6


def test_one_seed_leaves_out_and_shifts_the_same_cables_at_every_width_setting(monkeypatch):
    """The annotated centre lines (which cables, shifted how) are the same for a fixed factor and
    a range; only the widths differ."""
    scenes = [render(np.random.default_rng([9, index]), 128)[1] for index in range(6)]
    calls = []
    monkeypatch.setattr(synthetic, "cable_outline", lambda curve, width, size: calls.append((curve, width)))

    def centre_lines(width_factor):
        calls.clear()
        noise = AnnotationNoise(cable_width_factor=width_factor, cable_offset_px=1.0, cable_missing=0.4)
        for index, shapes in enumerate(scenes):
            stream = [9, index, NOISE_STREAM]
            noise.annotate(np.random.default_rng(stream), shapes, 128, np.random.default_rng([*stream, WIDTH_STREAM]))
        return list(calls)

    fixed, ranged, other = centre_lines(0.3), centre_lines([0.3, 1.0]), centre_lines([0.5, 0.9])
    assert len(fixed) >= 6 and len(fixed) == len(ranged) == len(other)
    for (a, _), (b, _), (c, _) in zip(fixed, ranged, other):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert sum(s[2] is not None for shapes in scenes for s in shapes) > len(fixed)   # some left out
    widths = lambda calls: np.array([w for _, w in calls])
    assert not np.array_equal(widths(fixed), widths(ranged))


@pytest.mark.parametrize("factor", [[0.8, 0.3], [0.0, 0.5], [-0.1, 0.5], [0.3], [0.3, 0.5, 0.9], "0.5",
                                    ["a", 1.0], None, 0.0])
def test_a_bad_width_factor_or_range_names_the_key(tmp_path, factor):
    with pytest.raises(ValueError, match=r"noise\.cable_width_factor must be"):
        generate(tmp_path / "bad", num_images=1, size=64, noise={"cable_width_factor": factor})
    assert not (tmp_path / "bad").exists()


def test_bad_noise_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="noise.cable_missing must be in"):
        generate(tmp_path / "bad", num_images=1, size=64, noise={"cable_missing": 1.5})


def test_worker_processes_write_the_same_bytes_as_one(tmp_path):
    """Each image draws from its own seed: two worker processes write exactly one's files."""
    noise = {"cable_width_factor": 0.5, "cable_offset_px": 1.0, "cable_missing": 0.2}
    one = generate(tmp_path / "one", num_images=6, size=128, seed=11, noise=noise, workers=1)
    two = generate(tmp_path / "two", num_images=6, size=128, seed=11, noise=noise, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len(files) == 18                                   # images, labels, truth
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    with pytest.raises(ValueError, match="data.generator.workers"):
        generate(tmp_path / "bad", num_images=2, size=64, workers=-1)
