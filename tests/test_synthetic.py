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
from vqi.data.synthetic import clip_polygon, generate


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
