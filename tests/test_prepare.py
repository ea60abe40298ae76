"""The prepared folder: its contract, bad input skipped or fatal, reuse by fingerprint,
no half-written folder, splits, void modes, COCO sources, and the CLI with a real MLflow store."""
from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from data_factory import CLASS_MAP, square, tree_digest, write_labelme
from vqi.data import prepared
from vqi.data.coco import CocoFile
from vqi.data.labelme import LabelmeFolder
from vqi.data.records import DataError
from vqi.data.splits import assign_listed, random_split, read_split_files

QUIET = {"progress": lambda items, **_: items}
SETTINGS = {"image_size": 40}


def good(folder, stem, **kwargs):
    shapes = [("Cable", square(0, 30, 100, 33)), ("tower_lattice", square(20, 10, 60, 70)),
              ("void", square(80, 60, 100, 80))]
    return write_labelme(folder, stem, shapes, **kwargs)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    for stem in ("a", "b", "c", "d"):
        good(folder, stem)
    write_labelme(folder, "e_bad_label", [("insulator", square(1, 1, 9, 9))])
    write_labelme(folder, "f_no_image", [("cable", square(1, 1, 9, 9))], image=False)
    return folder


def build(source, out, **kwargs):
    assignment = random_split(source.stems(), 0.25, 0.0, 0)
    return prepared.build(source, assignment, out, 40, **{**QUIET, **kwargs})


def test_build_writes_the_contract_and_never_touches_raw(raw, tmp_path):
    before = tree_digest(raw)
    out = tmp_path / "prepared"
    summary = build(LabelmeFolder(raw, CLASS_MAP), out)
    assert tree_digest(raw) == before
    assert {s["file"]: s["field"] for s in summary["skipped"]} == {"e_bad_label.json": "shapes[0].label",
                                                                  "f_no_image.json": "imagePath"}
    assert summary["skipped_count"] == 2 and summary["total"]["images"] == 4
    for split in summary["splits"]:
        doc = json.loads((out / "annotations" / f"{split}.json").read_text())
        assert [c["id"] for c in doc["categories"]] == [1, 2, 3, 4, 255]
        assert summary["splits"][split]["images"] == len(doc["images"])
        for entry in doc["images"]:
            stem = entry["file_name"].split("/")[1][:-4]
            assert entry["file_name"] == f"{split}/{stem}.png" and (entry["width"], entry["height"]) == (40, 40)
            image = Image.open(out / "images" / entry["file_name"])
            mask = np.asarray(Image.open(out / "masks" / split / f"{stem}.png"))
            assert image.mode == "RGB" and image.size == (40, 40) and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 1, 2, 255}
            assert mask[15, 2] == 1 and mask[10, 15] == 2 and mask[38, 38] == 255
    shares = summary["total"]["pixel_share"]
    assert abs(sum(shares.values()) - 1) < 1e-9 and shares["cable"] > 0
    assert summary["total"]["instances"] == {"cable": 4, "tower_lattice": 4, "tower_tucohy": 0,
                                             "tower_wooden": 0, "void": 4}
    assert (out / "fingerprint.txt").is_file() and not list(tmp_path.glob(".prepared.*"))


def test_on_error_fail_raises_and_keeps_the_previous_folder(raw, tmp_path):
    out = tmp_path / "prepared"
    build(LabelmeFolder(raw, CLASS_MAP), out, fingerprint_value="old")
    with pytest.raises(DataError, match="e_bad_label.json: shapes\\[0\\].label: unknown label 'insulator'"):
        build(LabelmeFolder(raw, CLASS_MAP), out, on_error="fail", fingerprint_value="new")
    assert prepared.current_fingerprint(out) == "old"
    assert not list(tmp_path.glob(".prepared.*"))  # the interrupted build left nothing behind


def test_no_usable_image_is_an_error(tmp_path):
    write_labelme(tmp_path / "raw", "x", [("cable", square(1, 1, 9, 9))], image=False)
    with pytest.raises(ValueError, match="no usable image among 1 records.*x.json: imagePath"):
        build(LabelmeFolder(tmp_path / "raw", CLASS_MAP), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reuse_by_fingerprint_and_force(raw, tmp_path):
    source, out = LabelmeFolder(raw, CLASS_MAP), tmp_path / "prepared"
    assignment = random_split(source.stems(), 0.25, 0.0, 0)
    kwargs = {"image_size": 40, **QUIET}
    first, reused = prepared.ensure(source, assignment, out, SETTINGS, **kwargs)
    stamp = (out / "summary.json").stat().st_mtime_ns
    again, reused_again = prepared.ensure(source, assignment, out, SETTINGS, **kwargs)
    assert (reused, reused_again) == (False, True) and again == first
    assert (out / "summary.json").stat().st_mtime_ns == stamp
    _, forced = prepared.ensure(source, assignment, out, SETTINGS, force=True, **kwargs)
    assert forced is False and (out / "summary.json").stat().st_mtime_ns != stamp
    good(raw, "a", size=(100, 81), image_size=(100, 81))  # an input changed: rebuilt
    _, changed = prepared.ensure(source, assignment, out, SETTINGS, **kwargs)
    assert changed is False and prepared.current_fingerprint(out) != first["fingerprint"]
    _, other = prepared.ensure(source, assignment, out, {"image_size": 41}, **kwargs)
    assert other is False


def test_output_inside_the_raw_folder_is_refused(raw):
    with pytest.raises(ValueError, match="overlaps the input folder"):
        prepared.ensure(LabelmeFolder(raw, CLASS_MAP), {"a": "train"}, raw / "processed", SETTINGS, image_size=40)


@pytest.mark.parametrize("void, pixel, categories, images", [
    ("ignore", 255, [1, 2, 3, 4, 255], 4), ("background", 0, [1, 2, 3, 4], 4), ("drop", None, [1, 2, 3, 4], 0)])
def test_void_modes(tmp_path, void, pixel, categories, images):
    for stem in ("a", "b", "c", "d"):
        good(tmp_path / "raw", stem)
    write_labelme(tmp_path / "raw", "plain", [("cable", square(0, 30, 100, 33))])
    out = tmp_path / "out"
    summary = build(LabelmeFolder(tmp_path / "raw", CLASS_MAP), out, void=void)
    assert summary["total"]["images"] == images + 1
    doc = json.loads((out / "annotations" / "train.json").read_text())
    assert [c["id"] for c in doc["categories"]] == categories
    if void == "drop":
        assert {s["reason"] for s in summary["skipped"]} == {"holds void shapes (data.void=drop)"}
    else:
        mask = np.asarray(Image.open(out / "masks" / "train" / f"{doc['images'][0]['file_name'][6:-4]}.png"))
        assert mask[38, 38] == pixel


def test_split_files_match_by_stem_without_final_newline(tmp_path):
    (tmp_path / "train.txt").write_text("a.json\nb.json\nzz.json\n")
    (tmp_path / "test.txt").write_text("c.json")
    lists = read_split_files(tmp_path)
    assert lists == {"train": ["a", "b", "zz"], "test": ["c"]}
    assignment, unlisted, absent = assign_listed(["a", "b", "c", "d"], lists)
    assert assignment == {"a": "train", "b": "train", "c": "test"} and unlisted == ["d"] and absent == 1
    (tmp_path / "val.txt").write_text("a.json\n")
    with pytest.raises(ValueError, match="'a' is listed in both train.txt and val.txt"):
        read_split_files(tmp_path)


def test_random_split_is_seeded_80_20_with_optional_val():
    stems = [f"s{i:02d}" for i in range(20)]
    split = random_split(stems, 0.2, 0.0, 7)
    assert split == random_split(list(reversed(stems)), 0.2, 0.0, 7)
    assert sorted(split.values()).count("test") == 4 and set(split.values()) == {"train", "test"}
    assert split != random_split(stems, 0.2, 0.0, 8)
    with_val = random_split(stems, 0.2, 0.1, 7)
    assert list(with_val.values()).count("val") == 2 and list(with_val.values()).count("train") == 14
    assert set(random_split(["one", "two"], 0.2, 0.0, 0).values()) == {"train", "test"}


def test_coco_source_round_trip_and_bad_category(raw, tmp_path):
    first = tmp_path / "first"
    build(LabelmeFolder(raw, CLASS_MAP), first)
    doc = json.loads((first / "annotations" / "train.json").read_text())
    doc["categories"] = [{**c, "name": c["name"].upper()} for c in doc["categories"]]
    coco_file = tmp_path / "coco.json"
    coco_file.write_text(json.dumps(doc))
    source = CocoFile(coco_file, first / "images", CLASS_MAP)
    second = tmp_path / "second"
    prepared.build(source, {s: "train" for s in source.stems()}, second, 40, **QUIET)
    for path in sorted((first / "masks" / "train").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(second / "masks" / "train" / path.name)))
    doc["annotations"][0]["category_id"] = 99
    coco_file.write_text(json.dumps(doc))
    bad = CocoFile(coco_file, first / "images", CLASS_MAP)
    stem = next(s for s in bad.stems() if bad.images[s]["id"] == doc["annotations"][0]["image_id"])
    with pytest.raises(DataError, match="annotations\\[0\\].category_id: no category with id 99"):
        bad.load(stem)


def test_data_configs_compose(make_cfg, tmp_path):
    default = make_cfg()
    assert default.data.name == "synthetic" and default.data.image_size == 160
    assert default.data.labels_dir.startswith(str(tmp_path / "data" / "raw"))
    for name in ("ttpla", "coco"):
        cfg = make_cfg(f"data={name}")
        assert cfg.data.image_size == 500 and cfg.data.void == "ignore" and cfg.data.on_error == "skip"
        assert cfg.data.processed_dir == str(tmp_path / "data" / "processed" / f"{name}-seed42-test0.2-val0.15-500")
        assert "generator" not in cfg.data   # the demo's image count is synthetic.yaml's, not the experiment's


def test_the_generated_data_folders_name_the_image_count_seed_size_and_noise(make_cfg, tmp_path):
    """A 60-image and a 200-image run (or two seeds) never share, and so never rebuild, one folder."""
    processed = tmp_path / "data" / "processed"
    demo = make_cfg()
    assert demo.data.processed_dir == str(processed / "synthetic-seed42-n200-s320-noise-w0.3-1-o1-m0.1-160")
    assert demo.data.labels_dir == str(tmp_path / "data" / "raw" / "synthetic-seed42-n200-s320-noise-w0.3-1-o1-m0.1")
    others = [make_cfg("data.generator.num_images=60"), make_cfg("seed=1"), make_cfg("data.generator.size=640"),
              make_cfg("noise=half_width"), make_cfg("data.image_size=96")]
    folders = {demo.data.processed_dir, *(cfg.data.processed_dir for cfg in others)}
    assert len(folders) == 1 + len(others)
    assert others[0].data.processed_dir == str(processed / "synthetic-seed42-n60-s320-noise-w0.3-1-o1-m0.1-160")
    assert make_cfg("noise=none").data.processed_dir == str(processed / "synthetic-seed42-n200-s320-160")


def test_a_real_datasets_folder_names_its_split(make_cfg, tmp_path):
    processed = tmp_path / "data" / "processed"
    paper = make_cfg("experiment=paper")
    assert paper.data.processed_dir == str(processed / "ttpla-seed42-test0.2-val0.1-500")
    assert make_cfg("experiment=paper", "data.split_seed=7").data.processed_dir == str(
        processed / "ttpla-seed7-test0.2-val0.1-500")
    assert make_cfg("experiment=paper", "data.test_fraction=0.3").data.processed_dir == str(
        processed / "ttpla-seed42-test0.3-val0.1-500")
    assert make_cfg("data=ttpla", f"data.split_files={tmp_path}").data.processed_dir == str(processed / "ttpla-lists-500")
    assert make_cfg("data=ttpla", "data.name=ttpla-sample").data.processed_dir == str(
        processed / "ttpla-sample-seed42-test0.2-val0.15-500")


def test_cli_prepare_end_to_end_with_mlflow(run_cli, tmp_path):
    proc = run_cli("stage=prepare", "data.generator.num_images=8", "data.preview_images=2")
    out = tmp_path / "data" / "processed" / "synthetic-seed42-n8-s320-noise-w0.3-1-o1-m0.1-160"   # the demo's noise
    fingerprint = (out / "fingerprint.txt").read_text().strip()
    assert len(list(out.glob("masks/*/*.png"))) == 8 and "reused" not in proc.stdout + proc.stderr
    assert len(list(out.glob("masks_truth/*/*.png"))) == 8
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("vqi-demo").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "prepare-synthetic-160"
    assert run.data.tags["stage"] == "prepare" and run.data.tags["dataset_fingerprint"] == fingerprint
    assert len(run.data.tags["git_commit"]) >= 7 and run.data.tags["prepare_reused"] == "false"
    assert run.data.params["data.generator.num_images"] == "8" and run.data.params["data.image_size"] == "160"
    assert sum(v for k, v in run.data.metrics.items() if k.startswith("images_") and k != "images_total") == 8
    assert run.data.metrics["skipped"] == 0 and run.data.tags["truth"] == "true"
    assert 0 < run.data.metrics["label_iou_cable/train"] < 0.9    # noisy cables against their truth
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {".hydra", "prepare"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "prepare")} == {"prepare/summary.json",
                                                                                   "prepare/preview.png"}


@pytest.mark.slow
def test_cli_rerun_reuses_and_force_rebuilds(run_cli, tmp_path):
    run_cli("stage=prepare", "data.generator.num_images=4")
    mask = next((tmp_path / "data" / "processed" / "synthetic-seed42-n4-s320-noise-w0.3-1-o1-m0.1-160").glob("masks/*/*.png"))
    stamp = mask.stat().st_mtime_ns
    again = run_cli("stage=prepare", "data.generator.num_images=4")
    assert "up to date (fingerprint" in again.stdout + again.stderr and mask.stat().st_mtime_ns == stamp
    forced = run_cli("stage=prepare", "data.generator.num_images=4", "data.force=true")
    assert "up to date" not in forced.stdout + forced.stderr and mask.stat().st_mtime_ns != stamp


def test_coco_annotation_that_is_not_an_object_is_an_error(raw, tmp_path):
    first = tmp_path / "first"
    build(LabelmeFolder(raw, CLASS_MAP), first)
    doc = json.loads((first / "annotations" / "train.json").read_text())
    doc["annotations"].append(1)
    coco_file = tmp_path / "coco.json"
    coco_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=f"annotations\\[{len(doc['annotations']) - 1}\\]: expected an object"):
        CocoFile(coco_file, first / "images", CLASS_MAP)
    coco_file.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        CocoFile(coco_file, first / "images", CLASS_MAP)
