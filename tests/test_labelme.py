"""The labelme reader: TTPLA's quirks read right, every bad input named by file and field."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_factory import CLASS_MAP, square, write_labelme
from vqi.data.labelme import LabelmeFolder
from vqi.data.records import DataError


def load(folder, stem, **kwargs):
    return LabelmeFolder(folder, CLASS_MAP, **kwargs).load(stem)


def test_reads_quirks_case_size_and_never_decodes_image_data(tmp_path):
    write_labelme(tmp_path, "a", [("Cable", square(10, 10, 90, 12)), ("TOWER_wooden", square(40, 20, 50, 79.8))],
                  image_data="bm90IGFuIGltYWdl!!not-base64", version="3.16.7")
    sample = load(tmp_path, "a")
    assert [s.label for s in sample.shapes] == ["cable", "tower_wooden"]
    assert (sample.width, sample.height) == (100, 80) and sample.image.dtype == np.uint8
    np.testing.assert_allclose(sample.shapes[0].polygons[0], square(10, 10, 90, 12))


def test_float_edge_is_clipped_within_tolerance(tmp_path):
    write_labelme(tmp_path, "a", [("cable", [[-0.7, 5], [100.2, 5], [100.2, 80.3], [50, 80]])])
    poly = load(tmp_path, "a").shapes[0].polygons[0]
    assert poly.min() == 0 and poly[:, 0].max() == 100 and poly[:, 1].max() == 80


def test_images_dir_separate_from_labels(tmp_path):
    write_labelme(tmp_path / "imgs", "a", [("cable", square(1, 1, 9, 9))])
    (tmp_path / "imgs" / "a.json").rename(tmp_path / "a.json")
    assert load(tmp_path, "a", images_dir=tmp_path / "imgs").width == 100


@pytest.mark.parametrize("case, field, words", [
    ("malformed", "<json>", "malformed JSON"),
    ("missing_image", "imagePath", "no image 'a.jpg'"),
    ("two_points", "shapes[1].points", "at least 3 points"),
    ("outside", "shapes[0].points", "outside the 100x80 image"),
    ("unknown_label", "shapes[0].label", "unknown label 'insulator'"),
    ("unreadable_image", "image", "cannot be read as an image"),
    ("size_mismatch", "imageWidth/imageHeight", "says 100x80 but the image a.jpg is 64x64"),
    ("no_width", "imageWidth", "positive integer"),
    ("not_polygon", "shapes[0].shape_type", "only 'polygon'"),
])
def test_bad_input_names_file_and_field(tmp_path, case, field, words):
    shapes = [("cable", square(1, 1, 9, 9))]
    kwargs = {}
    if case == "two_points":
        shapes.append(("cable", [[1, 1], [5, 5]]))
    elif case == "outside":
        shapes = [("cable", [[1, 1], [130, 5], [5, 9]])]
    elif case == "unknown_label":
        shapes = [("insulator", square(1, 1, 9, 9))]
    elif case == "missing_image":
        kwargs["image"] = False
    elif case == "size_mismatch":
        kwargs["image_size"] = (64, 64)
    path = write_labelme(tmp_path, "a", shapes, **kwargs)
    if case == "malformed":
        path.write_text(path.read_text()[:-5])
    elif case == "unreadable_image":
        (tmp_path / "a.jpg").write_bytes(b"this is not a jpeg")
    elif case in ("no_width", "not_polygon"):
        doc = json.loads(path.read_text())
        if case == "no_width":
            del doc["imageWidth"]
        else:
            doc["shapes"][0]["shape_type"] = "rectangle"
        path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as info:
        load(tmp_path, "a")
    assert info.value.field == field
    assert words in str(info.value)
    named = "a.jpg" if case == "unreadable_image" else "a.json"
    assert str(info.value).startswith(str(tmp_path / named))
