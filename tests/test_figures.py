"""Every figure writes a PNG of the expected size, with its class legend or colour bar drawn
(their colours are in the picture even when the data has none of them), from small real inputs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from vqi.classes import CLASS_NAMES, PERPLEXED
from vqi.models import build_model
from vqi.reporting.charts import (save_confusion_figure, save_curves_figure, save_lines_figure, save_table_chart,
                                  save_training_curves)
from vqi.reporting.examples import before_after_rows, methods_rows
from vqi.reporting.figures import (PANEL_PX, save_before_after_figure, save_cam_figure, save_methods_figure,
                                   save_overlay_figure, to_rgb)
from vqi.viz.overlay import PALETTE, overlay
from vqi.viz.preview import save_preview
from vqi.xai.maps import save_maps

WOODEN = PALETTE[4]
JET_TOP = (127, 0, 0)  # jet(1.0): only the colour bar has it when every map is 0


def _rgb(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _cable_mask(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[10:12, :] = 1  # cable only: tower_wooden's colour can come only from the legend
    return mask


def _picture(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _has_colour(picture: np.ndarray, colour, tol: int = 3) -> bool:
    return bool((np.abs(picture.astype(int) - np.array(colour)).max(-1) <= tol).any())


def _dpi(path) -> float:
    return float(Image.open(path).info["dpi"][0])


def test_class_colours_are_far_apart():
    """`perplexed` (magenta) and `tower_wooden` were hard to tell apart; every pair is distinct now."""
    named = {i: c for i, c in PALETTE.items() if i != 0}
    for (a, ca), (b, cb) in itertools.combinations(named.items(), 2):
        assert np.linalg.norm(np.subtract(ca, cb)) > 120, (a, b)
    assert np.linalg.norm(np.subtract(PALETTE[PERPLEXED], WOODEN)) > 200


def test_cam_figure_has_large_panels_a_legend_and_a_colour_bar(tmp_path):
    maps = [("cable", np.zeros((32, 32), np.float32)), ("tower_lattice", np.zeros((32, 32), np.float32))]
    path = save_cam_figure(tmp_path / "cam.png", _rgb(), _cable_mask(), _cable_mask(), maps,
                           title="GradCAM on test image x", method="GradCAM")
    picture = _picture(path)
    assert picture.shape[1] >= 5 * PANEL_PX and picture.shape[0] >= PANEL_PX  # 5 panels
    assert _has_colour(picture, WOODEN) and _has_colour(picture, JET_TOP)


def test_overlay_figure_has_three_panels_and_a_legend(tmp_path):
    path = save_overlay_figure(tmp_path / "o.png", _rgb(), _cable_mask(), _cable_mask(), title="x: model on test")
    picture = _picture(path)
    assert picture.shape[1] >= 3 * PANEL_PX and _has_colour(picture, WOODEN)


def test_methods_and_before_after_figures_from_real_maps_and_models(tmp_path):
    processed, maps_dir = tmp_path / "processed", tmp_path / "maps"
    stems = ["a", "b"]
    (processed / "annotations").mkdir(parents=True)
    (processed / "annotations" / "test.json").write_text(
        '{"images": [{"file_name": "test/a.png"}, {"file_name": "test/b.png"}], "categories": []}')
    for i, stem in enumerate(stems):
        for folder, array in (("images", _rgb(i)), ("masks", _cable_mask())):
            (processed / folder / "test").mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(processed / folder / "test" / f"{stem}.png")
        for method in ("gradcam", "hirescam", "random_cam"):
            save_maps(maps_dir / method / f"{stem}.npz", {"cable": np.full((32, 32), 0.1 * i, np.float32)})
    methods = [("gradcam", "GradCAM"), ("hirescam", "HiResCAM"), ("random_cam", "Random-CAM")]
    rows = methods_rows(processed, "test", maps_dir, methods)
    assert [r["label"].split("\n")[1] for r in rows] == ["cable"]  # the only class every method explained
    assert [m for m, _ in rows[0]["maps"]] == ["GradCAM", "HiResCAM", "Random-CAM"]
    path = save_methods_figure(tmp_path / "methods.png", rows, title="Every method, one image per class")
    picture = _picture(path)
    assert picture.shape[1] >= 5 * PANEL_PX and _has_colour(picture, JET_TOP) and _has_colour(picture, WOODEN)

    torch.manual_seed(0)
    original, enhanced = (build_model("deeplabv3_mobilenet_v3_large", num_classes=len(CLASS_NAMES)).eval()
                          for _ in range(2))
    images = [(torch.randn(3, 32, 32), torch.from_numpy(_cable_mask()).long(), stem) for stem in stems]
    with torch.no_grad():
        rows = before_after_rows(images, original, enhanced, torch.device("cpu"), to_rgb, count=1)
    assert len(rows) == 1 and rows[0]["original"].shape == (32, 32) and "Overall IoU" in rows[0]["enhanced_note"]
    path = save_before_after_figure(tmp_path / "fig6.png", rows, title="Original vs enhanced")
    picture = _picture(path)
    assert picture.shape[1] >= 4 * PANEL_PX and _has_colour(picture, PALETTE[PERPLEXED])  # in its legend


def test_confusion_matrix_is_150_dpi_with_a_colour_bar(tmp_path):
    mat = np.arange(25).reshape(5, 5) * 1000
    path = save_confusion_figure(tmp_path / "c.png", mat, CLASS_NAMES, title="Confusion: model on test")
    assert _dpi(path) == pytest.approx(150, abs=1)
    assert _picture(path).shape[0] >= 900


def test_charts(tmp_path):
    curves = save_training_curves(tmp_path / "t.png", {1: 0.9, 2: 0.8},
                                  {"Overall": {0: 0.0, 1: 0.1, 2: 0.2}, "tower_wooden": {0: 0.0, 1: 0.0, 2: 0.3}},
                                  title="Training")
    assert _dpi(curves) == pytest.approx(150, abs=1) and _has_colour(_picture(curves), WOODEN)
    chart = save_table_chart(tmp_path / "t1.png", ["GradCAM", "Random-CAM"],
                             [("ebpg", "EBPG↑", True, 2), ("drop", "Drop↓", True, 2), ("time", "Time(s)↓", False, 3)],
                             {"GradCAM": {"ebpg": 40.0, "drop": 1.0, "time": 0.1}, "Random-CAM": {"ebpg": 10.0}},
                             {"ebpg": {"GradCAM"}, "drop": {"GradCAM"}}, title="Table I")
    assert _has_colour(_picture(chart), (8, 81, 156))  # the best bar and its legend patch
    # what the chart shows: each value as a bar, the best dark and the others light, lengths in proportion
    ebpg = _picture(chart)[:, : _picture(chart).shape[1] // 3]   # the first panel: EBPG, 40.0 against 10.0
    best, other = _longest_run(ebpg, (8, 81, 156)), _longest_run(ebpg, (158, 202, 225))
    assert other > 20 and best / other == pytest.approx(4.0, rel=0.05)
    lines = save_lines_figure(tmp_path / "l.png", ["a", "b", "c"], {"x": [1.0, float("nan"), 0.5], "y": [0.2, 0.4, 0.6]},
                              "rho", title="Sanity", hline=0.0)
    assert _picture(lines).shape[1] > 600
    assert _has_colour(_picture(lines), C0) and _has_colour(_picture(lines), C1)   # one line per name
    deletion = save_curves_figure(tmp_path / "d.png", {"GradCAM": {"deletion": [1, 0.5], "insertion": [0, 1]},
                                                       "HiResCAM": {"deletion": [1, 0.2], "insertion": [0, 0.7]}},
                                  title="Deletion")
    picture = _picture(deletion)
    left, right = picture[:, : picture.shape[1] // 2], picture[:, picture.shape[1] // 2:]
    for panel in (left, right):                    # deletion | insertion: each method's curve in each
        assert panel.shape[1] > 300 and _has_colour(panel, C0) and _has_colour(panel, C1)
    only_deletion = _picture(save_curves_figure(tmp_path / "d1.png", {"GradCAM": {"deletion": [1, 0.5]}}, title="D"))
    assert _has_colour(only_deletion[:, : only_deletion.shape[1] // 2], C0)
    assert not _has_colour(only_deletion[:, only_deletion.shape[1] // 2:], C0)     # no insertion curve: none drawn


C0, C1 = (31, 119, 180), (255, 127, 14)   # matplotlib's first two line colours


def _longest_run(picture: np.ndarray, colour, tol: int = 3) -> int:
    """The most `colour` pixels in one row of `picture`: a horizontal bar's length in px (the grid
    lines drawn across it take a pixel or two)."""
    return int((np.abs(picture.astype(int) - np.array(colour)).max(-1) <= tol).sum(1).max())


def test_preview_shows_each_image_beside_its_mask_overlay_with_a_legend(tmp_path):
    """One row per image: the image as it is, then the image with its mask's classes blended in;
    the class legend shows every class, present or not."""
    images = [np.full((32, 32, 3), (90, 90, 90), np.uint8), np.full((32, 32, 3), (20, 160, 160), np.uint8)]
    masks = [_cable_mask(), np.zeros((32, 32), np.uint8)]        # the second image has no object
    one = _picture(save_preview(tmp_path / "p1.png", images[:1], masks[:1], ["train/a.png"], title="Prepared"))
    picture = _picture(save_preview(tmp_path / "p.png", images, masks, ["train/a.png", "train/b.png"],
                                    title="Prepared"))
    assert picture.shape[0] > 1.6 * one.shape[0]                  # a row per image
    assert _has_colour(picture, WOODEN)                            # the legend: a class no mask holds
    blended = tuple(int(v) for v in overlay(images[0], masks[0], 0.6)[10, 0])
    assert blended != (90, 90, 90)
    half = picture.shape[1] // 2
    image_side, overlay_side = picture[:, :half], picture[:, half:]
    assert _has_colour(image_side, (90, 90, 90), tol=1) and _has_colour(image_side, (20, 160, 160), tol=1)
    assert _has_colour(overlay_side, blended, tol=2)               # the mask shown on the image, right panel
    assert not _has_colour(image_side[: image_side.shape[0] - 80], blended, tol=2)   # not on the left (legend aside)
    assert _has_colour(overlay_side, (20, 160, 160), tol=1)        # no object: the image unchanged
