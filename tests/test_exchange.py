"""Proposals to an annotation tool and the expert's decisions back: real pycocotools reads every
file we write and every file the expert returns; the stages run on a composed Hydra config with
a real MLflow store."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image
from processed_factory import write_processed
from pycocotools.coco import COCO
from scipy.ndimage import binary_fill_holes
from serve_factory import write_review_file

from vqi import tracking
from vqi.augment import exchange, regions
from vqi.augment.review import read_review
from vqi.data.rasterize import instance_mask
from vqi.stages import export_proposals, import_decisions

SIZE = 64


@pytest.fixture
def setup(tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 3}, size=SIZE)
    review_file = tmp_path / "review" / "review.csv"
    write_review_file(review_file, processed)
    split = json.loads((processed / "annotations" / "train.json").read_text())
    return processed, review_file, split


def _mask_of(processed: Path):
    return lambda stem: np.asarray(Image.open(processed / "masks" / "train" / f"{stem}.png"))


def _coco(path: Path, doc: dict) -> COCO:
    path.write_text(json.dumps(doc))
    return COCO(str(path))


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_exported_proposals_are_valid_coco_with_the_proposed_objects(setup, tmp_path, segmentation):
    processed, review_file, split = setup
    proposals = read_review(review_file)
    doc = exchange.to_coco(proposals, split, _mask_of(processed), segmentation)
    coco = _coco(tmp_path / "out.json", doc)
    by_pid = {a["attributes"]["proposal_id"]: a for a in coco.dataset["annotations"] if "attributes" in a}
    assert set(by_pid) == {p.proposal_id for p in proposals}
    originals = [a for a in coco.dataset["annotations"] if "attributes" not in a]
    assert originals and all(a in split["annotations"] for a in originals)  # context, unchanged
    assert coco.getCatIds(catNms=["perplexed"])
    anns = {a["id"]: a for a in split["annotations"]}
    for p in proposals:
        drawn = coco.annToMask(by_pid[p.proposal_id]).astype(bool)
        mask = _mask_of(processed)(p.image)
        if p.kind == "enlarge":  # the object grown by k: its instance and the ring
            expected = instance_mask(anns[p.annotation_id], SIZE, SIZE) | regions.decode(p.region, SIZE, SIZE)
        else:
            expected = regions.decode(p.region, SIZE, SIZE)
        assert mask.shape == drawn.shape
        # RLE is exact; a polygon (no holes in COCO) is the object with its holes filled
        assert np.array_equal(drawn, expected if segmentation == "rle" else binary_fill_holes(expected)), p.proposal_id


def test_decisions_round_trip_through_a_coco_file_the_expert_edited(setup, tmp_path):
    processed, review_file, split = setup
    proposals = read_review(review_file)
    doc = exchange.to_coco(proposals, split, _mask_of(processed))
    enlarge = [p.proposal_id for p in proposals if p.kind == "enlarge"]
    unlabelled = [p.proposal_id for p in proposals if p.kind == "unlabelled"]
    edited = copy.deepcopy(doc)  # what the expert does in the tool:
    edited["annotations"] = [a for a in edited["annotations"]  # deletes one proposal
                             if a.get("attributes", {}).get("proposal_id") != unlabelled[0]]
    for a in edited["annotations"]:
        pid = a.get("attributes", {}).get("proposal_id")
        if pid == enlarge[0]:
            a["attributes"].update(decision="accept", k=4)   # marks one accepted, wider
        if pid == enlarge[1]:
            a["attributes"]["accepted"] = False              # unticks one
    coco = _coco(tmp_path / "edited.json", edited)  # still valid COCO for pycocotools
    decisions = exchange.decisions_from_coco(coco.dataset, proposals, "edited.json")
    assert decisions[unlabelled[0]].decision == "reject"
    assert decisions[enlarge[0]] == exchange.Decision("accept", 4)
    assert decisions[enlarge[1]].decision == "reject"
    assert all(decisions[i].decision == "pending" for i in unlabelled[1:])  # kept, unmarked: as they were
    assert exchange.decisions_from_coco(coco.dataset, proposals, "e", unmarked="accept")[unlabelled[1]].decision == "accept"
    changed = exchange.apply_decisions(proposals, decisions, "expert")
    assert changed == 3 and {p.decided_by for p in proposals if p.decision != "pending"} == {"expert"}
    bad = copy.deepcopy(edited)
    next(a for a in bad["annotations"] if "attributes" in a)["attributes"]["decision"] = "maybe"
    with pytest.raises(exchange.ExchangeError, match=r"bad.json: annotations\[\d+\]: attributes.decision"):
        exchange.decisions_from_coco(bad, proposals, "bad.json")
    with pytest.raises(exchange.ExchangeError, match="not a COCO document"):
        exchange.decisions_from_coco({"images": []}, proposals, "x.json")


def test_label_studio_tasks_and_their_export_back(setup):
    processed, review_file, split = setup
    proposals = read_review(review_file)
    doc = exchange.to_coco(proposals, split, _mask_of(processed))
    tasks = exchange.label_studio_tasks(proposals, doc, "/data/local-files/?d=images/")
    assert len(tasks) == len(doc["images"])
    results = [r for t in tasks for r in t["predictions"][0]["result"]]
    assert all(0 <= x <= 100 and 0 <= y <= 100 for r in results for x, y in r["value"]["points"])
    assert {pid for t in tasks for pid in t["data"]["vqi_proposals"].values()} == {p.proposal_id for p in proposals}
    assert '<Label value="perplexed"/>' in exchange.label_studio_config(c["name"] for c in doc["categories"])
    # Label Studio's JSON export after review: task 0 reviewed with one region deleted, task 1 not reviewed
    exported = copy.deepcopy(tasks)
    first = exported[0]
    kept = first["predictions"][0]["result"]
    dropped = kept[0]["id"]
    first["annotations"] = [{"result": kept[1:], "updated_at": "2026-01-02T00:00:00Z"}]
    decisions = exchange.decisions_from_label_studio(exported, proposals, "export.json", unmarked="accept")
    mapping = first["data"]["vqi_proposals"]
    assert decisions[mapping[dropped]].decision == "reject"
    others = {mapping[r["id"]] for r in kept[1:]} - {mapping[dropped]}  # (a proposal may have several polygons)
    assert others and {decisions[pid].decision for pid in others} == {"accept"}
    reviewed = set(mapping.values())
    assert set(decisions) == reviewed  # the unreviewed image's proposals are left alone


def _run(stage, cfg):
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        return stage.run(cfg)


@pytest.mark.slow  # MLflow store creation dominates: ~2 min on a shared core
def test_export_and_import_stages(setup, tmp_path, make_cfg):
    processed, review_file, split = setup
    common = [f"data.processed_dir={processed}", f"augment.review_file={review_file}",
              f"exchange.dir={tmp_path / 'exchange'}"]
    metrics = _run(export_proposals, make_cfg(*common, stage="export_proposals"))
    out = tmp_path / "exchange"
    coco = COCO(str(out / "proposals_coco.json"))
    assert metrics["proposals_exported"] == len(read_review(review_file)) == len(
        [a for a in coco.dataset["annotations"] if "attributes" in a])
    assert len(json.loads((out / "label_studio_tasks.json").read_text())) == len(coco.dataset["images"])
    edited = coco.dataset
    pids = [a["attributes"]["proposal_id"] for a in edited["annotations"] if "attributes" in a]
    edited["annotations"] = [a for a in edited["annotations"] if a.get("attributes", {}).get("proposal_id") != pids[0]]
    returned = tmp_path / "returned.json"
    returned.write_text(json.dumps(edited))
    metrics = _run(import_decisions, make_cfg(*common, f"exchange.file={returned}", "exchange.unmarked=accept",
                                              stage="import_decisions"))
    assert metrics["rows_changed"] == len(pids) and metrics["decisions_reject"] == 1
    rows = {p.proposal_id: p for p in read_review(review_file)}
    assert (rows[pids[0]].decision, rows[pids[0]].decided_by) == ("reject", "expert")
    assert all(rows[i].decision == "accept" and rows[i].decided_by == "expert" for i in pids[1:])
    with pytest.raises(FileNotFoundError, match="exchange.file"):
        _run(import_decisions, make_cfg(*common, f"exchange.file={tmp_path / 'missing.json'}", stage="import_decisions"))
