"""Masks from COCO annotations: pycocotools' rule, the overlap rule, and the converter checked
against an independent pycocotools rasterisation of generated data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from data_factory import CLASS_MAP
from vqi.data import prepared
from vqi.data.coco import scaled_annotations
from vqi.data.labelme import LabelmeFolder
from vqi.data.rasterize import instance_mask, rasterize
from vqi.data.records import Sample, Shape
from vqi.data.splits import random_split
from vqi.data.synthetic import generate


def ann(cat, poly, i=1):
    flat = [float(v) for p in poly for v in p]
    return {"id": i, "image_id": 1, "category_id": cat, "segmentation": [flat], "iscrowd": 0}


TOWER = [[10, 10], [50, 10], [50, 50], [10, 50]]
CABLE = [[0, 29], [60, 29], [60, 32], [0, 32]]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_smaller_instance_wins_whatever_the_order(order):
    anns = [ann(2, TOWER, 1), ann(1, CABLE, 2)]
    mask = rasterize([anns[i] for i in order], 64, 64)
    assert (mask[30, 5], mask[30, 30], mask[20, 30]) == (1, 1, 2)


def test_void_is_painted_last_and_equal_areas_let_the_later_win():
    void = ann(255, [[0, 0], [20, 0], [20, 64], [0, 64]], 3)
    mask = rasterize([ann(2, TOWER, 1), ann(1, CABLE, 2), void], 64, 64)
    assert mask[30, 5] == 255 and mask[30, 15] == 255 and mask[30, 30] == 1
    same = [ann(3, TOWER, 1), ann(4, TOWER, 2)]
    assert rasterize(same, 64, 64)[30, 30] == 4


def test_mask_is_pycocotools_not_pil_on_a_thin_polygon():
    thin = [[2.3, 10.2], [60.7, 30.9], [60.7, 31.8], [2.3, 11.1]]
    mask = rasterize([ann(1, thin)], 64, 64) == 1
    ref = mask_utils.decode(mask_utils.frPyObjects([[v for p in thin for v in p]], 64, 64))[..., 0].astype(bool)
    assert np.array_equal(mask, ref)
    pil = Image.new("L", (64, 64))
    ImageDraw.Draw(pil).polygon([tuple(p) for p in thin], fill=1)
    assert not np.array_equal(mask, np.asarray(pil).astype(bool))  # the two rules really differ here
    assert instance_mask(ann(1, thin), 64, 64).sum() == mask.sum()


def test_scaled_annotations_bbox_area_and_void_modes():
    sample = Sample("s", None, np.zeros((50, 100, 3), np.uint8),
                    (Shape("cable", (np.array([[10., 5], [90, 5], [90, 10], [10, 10]]),)),
                     Shape("void", (np.array([[0., 0], [20, 0], [20, 20]]),))))
    anns = scaled_annotations(sample, 200, "ignore", 7, 11)
    assert [a["category_id"] for a in anns] == [1, 255] and [a["id"] for a in anns] == [11, 12]
    assert anns[0]["bbox"] == [20.0, 20.0, 160.0, 20.0] and anns[0]["image_id"] == 7
    assert anns[0]["segmentation"] == [[20.0, 20.0, 180.0, 20.0, 180.0, 40.0, 20.0, 40.0]]
    assert abs(anns[0]["area"] - 160 * 20) <= 200
    assert [a["category_id"] for a in scaled_annotations(sample, 200, "background", 1, 1)] == [1]


def test_converter_matches_independent_rasterisation_on_generated_data(tmp_path):
    raw = generate(tmp_path / "raw", num_images=6, size=320, seed=5)
    source = LabelmeFolder(raw, CLASS_MAP)
    out = tmp_path / "prepared"
    prepared.build(source, random_split(source.stems(), 0.2, 0.0, 0), out, 160, progress=lambda x, **k: x)
    ious = {}
    for mask_path in sorted(out.glob("masks/*/*.png")):
        doc = json.loads((raw / f"{mask_path.stem}.json").read_text())
        ref = {}
        for shape in doc["shapes"]:
            cls = {"cable": 1, "tower_lattice": 2, "tower_tucohy": 3, "tower_wooden": 4, "void": 255}[shape["label"].lower()]
            flat = [min(max(v * 160 / 320, 0), 160) for p in shape["points"] for v in p]
            m = mask_utils.decode(mask_utils.frPyObjects([flat], 160, 160))[..., 0].astype(bool)
            ref[cls] = ref.get(cls, np.zeros((160, 160), bool)) | m
        contested = sum(m.astype(int) for m in ref.values()) > 1
        ours = np.asarray(Image.open(mask_path))
        for cls, m in ref.items():
            a, b = (ours == cls) & ~contested, m & ~contested
            if (a | b).any():
                ious.setdefault(cls, []).append((a & b).sum() / (a | b).sum())
    assert 1 in ious and len(ious) >= 3, ious.keys()
    assert min(min(v) for v in ious.values()) >= 0.98, ious
