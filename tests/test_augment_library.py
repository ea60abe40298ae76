"""Proposals, the review file and applying decisions, on hand-made masks with known answers."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from vqi.augment import regions
from vqi.review.apply import apply_to_image, augmented_coco, split_decisions
from vqi.augment.proposals import (ACCEPT, PENDING, REJECT, UNLABELLED, EnlargeRule, UnlabelledRule,
                                   label_choices, propose_enlargements, propose_unlabelled)
from vqi.review.file import MalformedRow, ReviewFileError, parse_rows, read_review, write_review
from vqi.review.policies import decide
from vqi.review.page import sheet_tiles, write_review_page
from vqi.review.sheets import read_layout, save_sheet
from vqi.classes import PERPLEXED as PERPLEXED_ID
from vqi.data.rasterize import instance_mask

NAMES = {1: "cable", 2: "tower_lattice"}


def scene():
    """A 40×40 image: a 1-px cable on row 10, a tower block touching it, a distractor on row 30."""
    mask = np.zeros((40, 40), np.uint8)
    cable = np.zeros((40, 40), bool)
    cable[10, 5:35] = True
    mask[cable] = 1
    mask[11:20, 20:25] = 2
    mask[0:3, 0:3] = 255
    polygon = [[5, 9.5, 35, 9.5, 35, 10.5, 5, 10.5]]
    annotations = {7: {"id": 7, "image_id": 1, "category_id": 1, "segmentation": polygon,
                       "area": 30, "bbox": [5, 10, 30, 1], "iscrowd": 0}}
    return mask, cable, annotations


def test_enlargement_takes_only_background():
    mask, cable, _ = scene()
    ring = regions.enlargement(cable, mask, 2)
    assert ring.any()
    assert not (ring & cable).any()
    assert (mask[ring] == 0).all()          # never the tower below, never ignore
    assert ring[8, 15] and ring[12, 15] and not ring[13, 15]


def test_every_thin_instance_with_background_around_it_is_proposed():
    mask, cable, _ = scene()
    found = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule(k=2, k_max=3))
    assert len(found) == 1 and (found[0].k, found[0].label) == (2, "cable")
    assert label_choices(found[0]) == ("cable",)
    boxed = np.full((40, 40), 2, np.uint8)      # an instance with no background around it: nothing to grow into
    boxed[10, 5:35] = 1
    assert propose_enlargements("a", boxed, [(7, cable)], "cable", EnlargeRule()) == []
    with pytest.raises(ValueError, match="k <= k_max <= 50"):
        EnlargeRule(k=4, k_max=3)


def test_unlabelled_regions_lie_outside_labelled_objects():
    mask, cable, _ = scene()
    predicted = cable.copy()
    predicted[30, 5:35] = True                # the distractor
    predicted[12:14, 5:15] = True             # next to the real cable: annotation slack
    found = propose_unlabelled("a", mask, predicted, "cable", UnlabelledRule(min_area=10, margin=3))
    assert len(found) == 1
    assert (found[0].kind, found[0].class_name, found[0].label) == (UNLABELLED, "cable", "")   # the expert labels it
    assert label_choices(found[0]) == ("cable", "perplexed")
    region = regions.decode(found[0].region, 40, 40)
    assert region[30, 5:35].all() and region.sum() == 30


def test_policies_prefill_decisions():
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    decide(props, "threshold", threshold=2.0)
    assert (props[0].decision, props[0].decided_by) == (REJECT, "policy:threshold")
    decide(props, "accept_all", threshold=2.0)
    assert (props[0].decision, props[0].decided_by) == (ACCEPT, "policy:accept_all")
    decide(props, "review", threshold=0.0)
    assert (props[0].decision, props[0].decided_by) == (PENDING, "")
    with pytest.raises(ValueError, match="augment.policy"):
        decide(props, "maybe", threshold=0.0)


def test_review_file_round_trip(tmp_path):
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    props += propose_unlabelled("a", mask, np.pad(np.ones((5, 30), bool), ((28, 7), (5, 5))), "cable",
                                UnlabelledRule(min_area=5))
    props += propose_unlabelled("b", mask, np.pad(np.ones((5, 30), bool), ((28, 7), (5, 5))), "cable",
                                UnlabelledRule(min_area=5))
    props[1].decision, props[1].label = ACCEPT, "perplexed"
    props[2].label = "cable"                  # chosen, not yet accepted
    path = tmp_path / "review.csv"
    write_review(path, props)
    assert read_review(path) == props and [p.label for p in read_review(path)] == ["cable", "perplexed", "cable"]


def test_a_review_file_without_decided_by_is_still_read(tmp_path):
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    props[0].decided_by = "expert"
    path = tmp_path / "review.csv"
    write_review(path, props)
    assert read_review(path)[0].decided_by == "expert"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with path.open("w", newline="") as handle:  # a file written before the column existed
        writer = csv.DictWriter(handle, [c for c in rows[0] if c != "decided_by"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert read_review(path)[0].decided_by == "" and read_review(path)[0].proposal_id == props[0].proposal_id


def test_offline_review_page_has_a_legend_and_no_absolute_path(tmp_path):
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    decide(props, "accept_all", threshold=0.0)
    page = tmp_path / "review.html"
    write_review_page(page, props, tmp_path / "review.csv", "make it")
    assert page.read_text().count("(no panel)") == len(props)       # no sheet yet
    save_sheet(tmp_path / "panels" / "a.png", sheet_tiles(np.zeros((40, 40, 3), np.uint8), mask, mask,
                                                          {"cable": (np.ones((40, 40)), cable)}))
    write_review_page(page, props, tmp_path / "review.csv", "make it")
    text = page.read_text()
    assert "(no panel)" not in text and text.count("url(panels/a.png)") == 4 * len(props)
    assert text.count('class="box"') == len(props)
    assert str(tmp_path) not in text and "<code>review.csv</code>" in text
    for words in ("ground truth | prediction | explanation | proposal", "tower_wooden", "void", "proposed pixels",
                  "linear-gradient", "policy:accept_all"):
        assert words in text


def _edit_row(path, column, value):
    """Set `column` of the file's first row to `value`, as a spreadsheet would."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("sheet", [b"GIF89a" + bytes(64), "not json [", "5", "[" * 50_000 + "]" * 50_000,
                                   '["a", "a"]', '["ground truth", "prediction"]'])
def test_a_tampered_sheet_leaves_the_offline_page_without_that_panel(tmp_path, sheet):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    path = tmp_path / "panels" / "a.png"
    path.parent.mkdir()
    if isinstance(sheet, bytes):
        path.write_bytes(sheet)
    else:       # a PNG whose tile names are wrong (the last: two names, but 41 px is not two tiles)
        info = PngInfo()
        info.add_text("vqi-tiles", sheet)
        Image.new("RGB", (41, 40)).save(path, pnginfo=info)
    assert read_layout(path) is None
    write_review_page(tmp_path / "review.html", props, tmp_path / "review.csv", "make it")
    assert "(no panel)" in (tmp_path / "review.html").read_text()


@pytest.mark.parametrize("column,value,message", [
    ("decision", "maybe", "field 'decision'"),
    ("k", "-1", "field 'k'"),
    ("k", "two", "field 'k'"),
    ("kind", "grow", "field 'kind'"),
    ("k", "1" + "0" * 30, r"field 'k' must be from 0 to 50, got '1000"),     # an absurd k: minutes of dilation
    ("bbox", "[1e400, 0, 1, 1]", "field 'bbox' must be"),                     # overflows a float
    ("bbox", "[" * 100_000 + "]" * 100_000, r"field 'bbox' must be .*\(200000 chars\)"),   # recursion
    ("bbox", "[1, 2, 3]", "field 'bbox' must be"),
    ("score", "1e400", "field 'score' must be a finite number or nan"),
])
def test_review_file_errors_name_file_row_and_field(tmp_path, column, value, message):
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    path = tmp_path / "review.csv"
    write_review(path, props)
    _edit_row(path, column, value)
    with pytest.raises(ReviewFileError, match=rf"review.csv, row 2: {message}"):
        read_review(path)


def test_a_malformed_row_is_kept_as_written_when_the_file_is_rewritten(tmp_path):
    mask, cable, _ = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    props += propose_enlargements("b", mask, [(7, cable)], "cable", EnlargeRule())
    path = tmp_path / "review.csv"
    write_review(path, props)
    _edit_row(path, "bbox", "[1e400, 0, 1, 1]")     # overflows a float
    lines = path.read_text().splitlines()
    with path.open(newline="") as handle:
        rows = parse_rows(handle, path)
    assert isinstance(rows[0], MalformedRow) and rows[0].row == 2 and "field 'bbox'" in rows[0].error
    assert rows[1] == props[1]
    rows[1].decision = ACCEPT
    write_review(path, rows)
    assert path.read_text().splitlines()[1] == lines[1]      # the bad row as the user left it
    with pytest.raises(ReviewFileError, match="row 2: field 'bbox'"):
        read_review(path)


def _apply(decision, label="perplexed"):
    """The scene's cable enlargement and one unlabelled region, both given `decision`; the
    region labelled `label`."""
    mask, cable, annotations = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule(k=2))
    props += propose_unlabelled("a", mask, np.pad(np.ones((2, 30), bool), ((30, 8), (5, 5))), "cable",
                                UnlabelledRule(min_area=5))
    for p in props:
        p.decision = decision
    props[1].label = label
    accepted, _ = split_decisions(props)
    return mask, props, apply_to_image(mask, annotations, accepted, NAMES)


def test_rejected_proposals_change_nothing():
    mask, _, (new_mask, enlarged, new_regions, summary) = _apply(REJECT)
    assert np.array_equal(new_mask, mask) and enlarged == [] and new_regions == []


def test_accepted_proposals_change_exactly_their_regions():
    mask, props, (new_mask, enlarged, new_regions, summary) = _apply(ACCEPT)
    changed = new_mask != mask
    ring = regions.decode(props[0].region, 40, 40)
    distractor = regions.decode(props[1].region, 40, 40)
    assert np.array_equal(changed, ring | distractor)
    assert (new_mask[ring] == 1).all() and (new_mask[distractor] == PERPLEXED_ID).all()
    assert summary.pixels["cable"] == ring.sum() and summary.instances["perplexed"] == 1
    grown = instance_mask(enlarged[0], 40, 40)
    assert np.array_equal(grown, new_mask == 1)


@pytest.mark.parametrize("label,class_id", [("cable", 1), ("perplexed", PERPLEXED_ID)])
def test_an_accepted_unlabelled_region_gets_its_label_in_the_mask_and_the_coco(label, class_id):
    mask, props, (new_mask, enlarged, new_regions, summary) = _apply(ACCEPT, label)
    region = regions.decode(props[1].region, 40, 40)
    assert (new_mask[region] == class_id).all() and summary.instances[label] >= 1
    coco = {"images": [{"id": 1}], "annotations": list(scene()[2].values()), "categories": [{"id": 1, "name": "cable"}]}
    added = augmented_coco(coco, enlarged, {1: new_regions})["annotations"][-1]
    assert added["category_id"] == class_id and np.array_equal(instance_mask(added, 40, 40), region)


def test_an_accepted_unlabelled_region_without_a_label_is_refused():
    with pytest.raises(ValueError, match=r"a/unlabelled-cable/0: accepted without a label.*cable or perplexed"):
        _apply(ACCEPT, "")


def test_expert_changed_k_is_honoured():
    mask, cable, annotations = scene()
    props = propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule(k=2))
    props[0].decision, props[0].k = ACCEPT, 1
    new_mask, *_ = apply_to_image(mask, annotations, props, NAMES)
    assert np.array_equal(new_mask != mask, regions.enlargement(cable, mask, 1))


def test_augmented_coco_leaves_the_original_dict_alone():
    mask, cable, annotations = scene()
    coco = {"images": [{"id": 1}], "annotations": list(annotations.values()),
            "categories": [{"id": 1, "name": "cable"}]}
    before = repr(coco)
    _, props, (_, enlarged, new_regions, _) = _apply(ACCEPT)
    out = augmented_coco(coco, enlarged, {1: new_regions})
    assert repr(coco) == before
    assert [a["id"] for a in out["annotations"]] == [7, 8]
    assert out["annotations"][1]["category_id"] == PERPLEXED_ID
    assert {"id": PERPLEXED_ID, "name": "perplexed", "supercategory": "distractor"} in out["categories"]


def test_an_image_sheet_holds_its_named_tiles_and_panels_are_windows_around_the_box(tmp_path):
    from vqi.review.page import heatmap, highlight, sheet_tiles
    from vqi.review.sheets import NotASheet, cut_tiles, read_layout, save_sheet, window
    from vqi.viz.overlay import overlay
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    mask, _, _ = scene()
    truth = np.zeros((120, 200), np.uint8)
    truth[:40, :40] = mask
    predicted = np.roll(truth, 3, axis=1)
    cam = rng.random((120, 200)).astype(np.float32)
    region = np.zeros((120, 200), bool)
    region[50:54, 150:190] = True
    tiles = sheet_tiles(image, truth, predicted, {"cable": (cam, region), "tower_wooden": (None, ~region)})
    assert list(tiles) == ["ground truth", "prediction", "explanation cable", "proposals cable",
                           "explanation tower_wooden", "proposals tower_wooden"]
    expected = [overlay(image, truth), overlay(image, predicted), heatmap(image, cam), highlight(image, region),
                image, highlight(image, ~region)]   # no explanation: the plain image
    assert all(np.array_equal(tiles[n], e) for n, e in zip(tiles, expected))
    path = tmp_path / "panels" / "a.png"
    save_sheet(path, tiles)
    layout = read_layout(path)
    assert layout.names == list(tiles) and (layout.tile_width, layout.height) == (200, 120)
    assert layout.width == 6 * 200 + 5 * 4 and layout.left("proposals cable") == 3 * 204
    got = cut_tiles(path, ["prediction", "explanation cable"], (120, 200))
    assert np.array_equal(got[0], expected[1]) and np.array_equal(got[1], expected[2])
    with pytest.raises(NotASheet, match="a.png: no tile explanation tower_lattice"):
        cut_tiles(path, ["explanation tower_lattice"], (120, 200))
    with pytest.raises(NotASheet, match="a.png: tiles of 200x120 px, not this image's 64x64"):
        cut_tiles(path, ["prediction"], (64, 64))
    assert read_layout(tmp_path / "none.png") is None
    rows, cols = window(regions.bbox(region), 120, 200, context=0.5, min_side=32)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (36, 68, 120, 200)  # 2x the box, shifted inside
    assert window([0, 0, 1, 1], 120, 200, min_side=500) == (slice(0, 120), slice(0, 200))   # never past the image


def test_an_unlabelled_proposal_is_drawn_with_its_class_explanation_and_its_label(tmp_path):
    mask, cable, _ = scene()
    predicted = np.zeros((40, 40), bool)
    predicted[30:34, 2:30] = True                      # far from every labelled object
    found = propose_unlabelled("a", mask, predicted, "cable", UnlabelledRule(min_area=4, margin=1))
    assert found and all(p.kind == UNLABELLED and p.class_name == "cable" for p in found)
    found += propose_enlargements("a", mask, [(7, cable)], "cable", EnlargeRule())
    save_sheet(tmp_path / "panels" / "a.png", sheet_tiles(np.zeros((40, 40, 3), np.uint8), mask, mask,
                                                          {"cable": (None, predicted)}))
    write_review_page(tmp_path / "review.html", found, tmp_path / "review.csv", "make it")
    text = (tmp_path / "review.html").read_text()
    assert "(no panel)" not in text
    assert "label <i>to choose: cable or perplexed</i>" in text and "label cable<br>" in text
    found[0].label = "perplexed"
    write_review_page(tmp_path / "review.html", found, tmp_path / "review.csv", "make it")
    assert "label perplexed<br>" in (tmp_path / "review.html").read_text()


def test_components_boxes_scores_and_union_match_their_full_image_definitions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(5, 90, 2))
        seeds = (rng.random((height, width)) > 0.97).astype(np.uint8)
        region = cv2.dilate(seeds, np.ones((3, 3), np.uint8)).astype(bool)
        cam = rng.random((height, width)).astype(np.float32)
        count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
        expected = [labels == i for i in range(1, count) if (labels == i).sum() >= 4]
        parts = regions.components(region, 4)
        assert len(parts) == len(expected)
        for want, part in zip(expected, parts):
            ys, xs = np.nonzero(want)
            assert np.array_equal(part.mask, want) and part.area == int(want.sum())
            assert part.bbox == regions.bbox(want) == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert float(part.values(cam).mean()) == float(cam[want].mean())   # same values, same order
        if expected:
            assert np.array_equal(regions.union([regions.encode(m) for m in expected], height, width),
                                  np.logical_or.reduce(expected))
