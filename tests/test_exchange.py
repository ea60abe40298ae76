"""Proposals to an annotation tool and the expert's decisions back: real pycocotools reads every
file we write and every file the expert returns; the stages run on a composed Hydra config with
a real MLflow store."""
from __future__ import annotations

import copy
import json
import re
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
from vqi.augment import regions
from vqi.review import exchange
from vqi.review.file import read_review
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
    assert decisions[enlarge[0]] == exchange.Decision("accept", 4, "cable")
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


def _labelled(review_file: Path) -> list:
    """The review file's proposals, its unlabelled regions labelled perplexed, cable, perplexed..."""
    proposals = read_review(review_file)
    unlabelled = [p for p in proposals if p.kind == "unlabelled"]
    assert len(unlabelled) >= 2
    for i, p in enumerate(unlabelled):
        p.label = ("perplexed", "cable")[i % 2]
    return proposals


def test_labels_round_trip_through_the_coco_file(setup, tmp_path):
    processed, review_file, split = setup
    proposals = _labelled(review_file)
    unchosen = [p for p in proposals if p.kind == "unlabelled"][-1]
    unchosen.label = ""               # not chosen yet: exported as its thin class, the model's guess
    doc = exchange.to_coco(proposals, split, _mask_of(processed))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    exported = {a["attributes"]["proposal_id"]: a for a in doc["annotations"] if "attributes" in a}
    assert {pid: names[a["category_id"]] for pid, a in exported.items()} == \
        {p.proposal_id: p.label or p.class_name for p in proposals}
    assert exported[unchosen.proposal_id]["attributes"]["current_label"] == "" and unchosen.class_name == "cable"
    back = _coco(tmp_path / "back.json", doc).dataset
    untouched = exchange.decisions_from_coco(back, proposals, "back.json")       # kept, unmarked, unchanged
    assert exchange.apply_decisions(copy.deepcopy(proposals), untouched, "expert") == 0
    accepted = exchange.decisions_from_coco(back, proposals, "back.json", unmarked="accept")
    assert {pid: d.label for pid, d in accepted.items()} == {p.proposal_id: p.label or p.class_name for p in proposals}
    # the expert relabels the first region cable and marks it accepted
    first = next(p for p in proposals if p.kind == "unlabelled")
    ann = next(a for a in back["annotations"] if a.get("attributes", {}).get("proposal_id") == first.proposal_id)
    ann["category_id"], ann["attributes"]["decision"] = 1, "accept"
    changed = exchange.decisions_from_coco(back, proposals, "back.json")
    assert changed[first.proposal_id] == exchange.Decision("accept", None, "cable")
    assert exchange.apply_decisions(proposals, changed, "expert") == 1
    assert (first.decision, first.label, first.decided_by) == ("accept", "cable", "expert")


def test_labels_round_trip_through_label_studio(setup):
    processed, review_file, split = setup
    proposals = _labelled(review_file)
    doc = exchange.to_coco(proposals, split, _mask_of(processed))
    tasks = exchange.label_studio_tasks(proposals, doc, "/data/local-files/?d=images/")
    for task in tasks:                  # every task submitted as pre-annotated
        task["annotations"] = [{"result": copy.deepcopy(task["predictions"][0]["result"]),
                                "updated_at": "2026-01-02T00:00:00Z"}]
    drawn = {task["data"]["vqi_proposals"][r["id"]]: r["value"]["polygonlabels"]
             for task in tasks for r in task["predictions"][0]["result"]}
    assert drawn == {p.proposal_id: [p.label] for p in proposals}
    accepted = exchange.decisions_from_label_studio(tasks, proposals, "export.json", unmarked="accept")
    assert {pid: d.label for pid, d in accepted.items()} == {p.proposal_id: p.label for p in proposals}
    second = [p for p in proposals if p.kind == "unlabelled"][1]            # relabelled perplexed in the tool
    for task in tasks:
        for r in task["annotations"][0]["result"]:
            if task["data"]["vqi_proposals"][r["id"]] == second.proposal_id:
                r["value"]["polygonlabels"] = ["perplexed"]
    changed = exchange.decisions_from_label_studio(tasks, proposals, "export.json")
    assert changed[second.proposal_id] == exchange.Decision("pending", None, "perplexed")
    exchange.apply_decisions(proposals, changed, "expert")
    assert (second.decision, second.label) == ("pending", "perplexed")


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


def _proposal_annotations(doc: dict, kind: str) -> list[dict]:
    return [a for a in doc["annotations"] if a.get("attributes", {}).get("kind") == kind]


def _set(key: str, value):
    """An edit of the first enlargement's attributes (or of the annotation, for a top-level key)."""
    def edit(doc):
        ann = _proposal_annotations(doc, "enlarge")[0]
        (ann if key in ("image_id", "category_id") else ann["attributes"])[key] = value
    return edit


def _duplicate(doc):
    doc["annotations"].append(copy.deepcopy(_proposal_annotations(doc, "enlarge")[0]))


def _relabel(kind: str, category: int):
    def edit(doc):
        _proposal_annotations(doc, kind)[0]["category_id"] = category
    return edit


def _k_on_a_region(doc):
    _proposal_annotations(doc, "unlabelled")[0]["attributes"]["k"] = 2


BAD_COCO = {   # issue 24 case 3: each used to be stored, or to die on a raw Python error naming nothing
    "k 10^30": (_set("k", 10**30), r"attributes.k must be an integer from 0 to 3, got 10000"),
    "k Infinity": (_set("k", float("inf")), r"attributes.k must be an integer from 0 to 3, got inf"),
    "k above k_max": (_set("k", 4), r"attributes.k must be an integer from 0 to 3, got 4"),
    "k a list": (_set("k", [2]), r"attributes.k must be an integer from 0 to 3, got a JSON array"),
    "id a list": (_set("proposal_id", [1]), r"attributes.proposal_id a JSON array is not in the review file"),
    "id twice": (_duplicate, r"attributes.proposal_id '[^']+' appears twice \(also annotations\[\d+\]\)"),
    "no such image": (_set("image_id", 999), r"field 'image_id' 999 is not an image of the file"),
    "another image": (_set("image_id", 2), r"field 'image_id' names image 'train_001', but proposal '[^']+' is on"),
    "decision a dict": (_set("decision", {"a": 1}), r"attributes.decision must be one of .* got a JSON object"),
    "accepted maybe": (_set("accepted", "maybe"), r"attributes.accepted must be true or false, got 'maybe'"),
    "region as a tower": (_relabel("unlabelled", 2), r"field 'category_id' \(2\) is 'tower_lattice', but proposal "
                                                     r"'[^']+' \(unlabelled\) may only be cable or perplexed"),
    "enlargement as perplexed": (_relabel("enlarge", 5), r"field 'category_id' \(5\) is 'perplexed', but proposal "
                                                         r"'[^']+' \(enlarge\) may only be cable"),
    "unknown category": (_relabel("enlarge", 77), r"field 'category_id' 77 is not one of the file's categories"),
    "k on a region": (_k_on_a_region, r"attributes.k: proposal '[^']+' \(unlabelled\): only enlargements have k"),
}


@pytest.mark.parametrize("case", list(BAD_COCO))
def test_import_refuses_a_bad_coco_file_naming_record_and_field(setup, tmp_path, make_cfg, case):
    processed, review_file, split = setup
    edit, message = BAD_COCO[case]
    doc = exchange.to_coco(read_review(review_file), split, _mask_of(processed))
    assert {img["id"] for img in doc["images"]} == {1, 2}
    edit(doc)
    returned = tmp_path / "returned.json"
    returned.write_text(json.dumps(doc))      # (Infinity, as Python's json writes it)
    before = review_file.read_bytes()
    cfg = make_cfg(f"data.processed_dir={processed}", f"augment.review_file={review_file}",
                   f"exchange.file={returned}", "exchange.unmarked=accept", stage="import_decisions")
    with pytest.raises(exchange.ExchangeError, match=rf"^{re.escape(str(returned))}: annotations\[\d+\]: {message}"):
        import_decisions.run(cfg)             # refused before the run logs anything
    assert review_file.read_bytes() == before


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "JSON nested deeper than 64 levels"),
    ('{"images": [], "annotations": [' + "[" * 100 + "]" * 100 + "]}", "JSON nested deeper than 64 levels"),
    ('{"k": ' + "9" * 5000 + "}", "not UTF-8 JSON"),
])
def test_import_refuses_a_file_it_cannot_parse_naming_it(setup, tmp_path, make_cfg, text, message):
    processed, review_file, _ = setup
    returned = tmp_path / "returned.json"
    returned.write_text(text)
    before = review_file.read_bytes()
    cfg = make_cfg(f"augment.review_file={review_file}", f"exchange.file={returned}", stage="import_decisions")
    with pytest.raises(exchange.ExchangeError, match=rf"^{re.escape(str(returned))}: {message}"):
        import_decisions.run(cfg)
    assert review_file.read_bytes() == before


def _ls_edit(tasks: list, field: str, value) -> None:
    """Task 0 submitted as pre-annotated, with one field changed (`label`: every region of its
    first unlabelled proposal)."""
    task = tasks[0]
    task["annotations"] = [{"result": copy.deepcopy(task["predictions"][0]["result"])}]
    mapping = task["data"]["vqi_proposals"]
    if field == "label":
        region = next(pid for pid in mapping.values() if "/unlabelled-" in pid)
        for r in task["annotations"][0]["result"]:
            if mapping[r["id"]] == region:
                r["value"]["polygonlabels"] = value
    elif field == "mapping":
        mapping["p0"] = value
    else:
        task["annotations"][0][field] = value


@pytest.mark.parametrize("field,value,message", [
    ("label", ["tower_lattice"], r"task 0: its regions' label is 'tower_lattice', but proposal '[^']+' \(unlabelled\)"),
    ("label", "cable", r"task 0: region 'p\d+': field 'value.polygonlabels' must name one label, got 'cable'"),
    ("mapping", ["x"], r"task 0: field 'data.vqi_proposals' must map region ids to proposal ids, got a JSON array"),
    ("updated_at", [[1]], r"task 0: annotations\[0\]: field 'updated_at' must be a time as text"),
    ("result", {"id": 1}, r"task 0: annotations\[0\]: field 'result' must be a list"),
])
def test_import_refuses_a_bad_label_studio_export(setup, field, value, message):
    processed, review_file, split = setup
    proposals = read_review(review_file)
    tasks = exchange.label_studio_tasks(proposals, exchange.to_coco(proposals, split, _mask_of(processed)), "/x/")
    _ls_edit(tasks, field, value)
    with pytest.raises(exchange.ExchangeError, match=rf"^export.json: {message}"):
        exchange.decisions_from_label_studio(tasks, proposals, "export.json")


def test_import_refuses_a_proposal_in_two_label_studio_tasks(setup):
    processed, review_file, split = setup
    proposals = read_review(review_file)
    tasks = exchange.label_studio_tasks(proposals, exchange.to_coco(proposals, split, _mask_of(processed)), "/x/")
    with pytest.raises(exchange.ExchangeError, match=r"^export.json: task 1: proposal '[^']+' is also in task 0"):
        exchange.decisions_from_label_studio([tasks[0], tasks[0]], proposals, "export.json")


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
