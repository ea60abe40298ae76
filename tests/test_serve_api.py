"""HTTP tests of every endpoint of the web app, against a real app with a real small model."""
from __future__ import annotations

import base64
import csv
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from processed_factory import write_processed
from serve_factory import write_checkpoint, write_review_file

from vqi.augment.proposals import Proposal
from vqi.review.file import read_review, write_review
from vqi.review.sheets import PREDICTION, TILES_KEY, TRUTH, explanation_tile, proposals_tile, save_sheet, sheet_name
from vqi.classes import PERPLEXED
from vqi.viz.overlay import PALETTE
from vqi.classes import CLASS_NAMES
from vqi.serve.app import create_app, fast_methods
from vqi.serve.registry import CheckpointRegistry

SIZE = 64
CLASS_MAP = {n: n for n in CLASS_NAMES[1:]} | {"void": "void"}


def make_app(root: Path, **overrides):
    kwargs = dict(registry=CheckpointRegistry({"tiny": root / "ckpt" / "best.pt"}, "cpu", SIZE),
                  methods=fast_methods(["gradcam", "hirescam"]), review_file=root / "review" / "review.csv",
                  images_dir=root / "processed" / "images" / "train", masks_dir=root / "processed" / "masks" / "train",
                  work_dir=root / "scratch", class_map=CLASS_MAP, max_upload_bytes=2**20)
    kwargs.update(overrides)
    return create_app(**kwargs)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    write_processed(root / "processed", {"train": 3}, size=SIZE)
    write_checkpoint(root / "ckpt" / "best.pt", size=SIZE)
    return root


@pytest.fixture
def review(root) -> list[str]:
    return write_review_file(root / "review" / "review.csv", root / "processed")


@pytest.fixture(scope="module")
def client(root):
    return make_app(root).test_client()


def image_bytes(root: Path, stem: str = "train_000") -> bytes:
    return (root / "processed" / "images" / "train" / f"{stem}.png").read_bytes()


def labelme_doc(root: Path, stem: str = "train_000") -> dict:
    """The prepared image's COCO polygons rewritten as a labelme file."""
    doc = json.loads((root / "processed" / "annotations" / "train.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    image = next(i for i in doc["images"] if Path(i["file_name"]).stem == stem)
    shapes = [{"label": names[a["category_id"]], "shape_type": "polygon",
               "points": np.reshape(a["segmentation"][0], (-1, 2)).tolist()}
              for a in doc["annotations"] if a["image_id"] == image["id"]]
    return {"shapes": shapes, "imagePath": f"{stem}.png", "imageWidth": SIZE, "imageHeight": SIZE}


def post_analyze(client, data: bytes, annotation: bytes | None = None, ann_name: str = "train_000.json",
                 model: str = "tiny", method: str = "gradcam", name: str = "train_000.png"):
    form = {"model": model, "method": method, "image": (io.BytesIO(data), name)}
    if annotation is not None:
        form["annotation"] = (io.BytesIO(annotation), ann_name)
    return client.post("/api/analyze", data=form, content_type="multipart/form-data")


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def assert_plain_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    text = response.get_json()["error"]
    assert "Traceback" not in response.get_data(as_text=True) and 'File "' not in text
    for word in words:
        assert word in text
    return text


def test_pages_and_models(client):
    for path, marker in (("/", 'id="analyze-form"'), ("/review", 'id="proposals"')):
        response = client.get(path)
        assert response.status_code == 200 and marker in response.get_data(as_text=True)
    assert client.get("/api/models").get_json() == {"models": ["tiny"], "methods": ["gradcam", "hirescam"]}
    assert_plain_error(client.get("/nope"), 404)


def test_the_app_runs_the_methods_that_a_model_and_a_layer_build():
    """Its methods are conf/xai's (vqi.xai.catalogue.xai_catalogue), with their yaml's options."""
    assert fast_methods(["scorecam"])["scorecam"](torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), "0").batch_size == 16
    with pytest.raises(ValueError, match=r"unknown \['ensemble'\]; valid: .*gradcampp.*lots"):
        fast_methods(["gradcam", "ensemble"])


def test_review_legend_shows_the_tiles_palette(client):
    page = client.get("/review").get_data(as_text=True)
    for cls, name in ((1, "cable"), (4, "tower_wooden"), (PERPLEXED, "perplexed")):
        assert f'background:#{"%02x%02x%02x" % PALETTE[cls]}"></span>{name}<' in page


def test_analyze_without_annotation(client, root):
    response = post_analyze(client, image_bytes(root))
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert data["model"] == "tiny" and data["size"] == [SIZE, SIZE] and "scores" not in data
    assert sum(a["pixels"] for a in data["areas"].values()) == SIZE * SIZE
    assert decode_png(data["overlays"]["segmentation"]).shape == (SIZE, SIZE, 3)
    predicted = [n for n, a in data["areas"].items() if n != "background" and a["pixels"] > 0]
    assert sorted(data["overlays"]["explanations"]) == sorted(predicted)
    assert data["timing_ms"]["total"] >= data["timing_ms"]["predict"] > 0


def test_analyze_with_labelme_and_coco_annotations_agree(client, root):
    labelme = post_analyze(client, image_bytes(root), json.dumps(labelme_doc(root)).encode())
    coco = post_analyze(client, image_bytes(root), (root / "processed" / "annotations" / "train.json").read_bytes(),
                        ann_name="train.json")
    assert labelme.status_code == 200 and coco.status_code == 200, labelme.get_data(as_text=True)
    a, b = labelme.get_json(), coco.get_json()
    truth = decode_png(a["overlays"]["ground_truth"])
    assert not np.array_equal(truth, decode_png(a["overlays"]["image"]))  # objects are drawn
    assert np.array_equal(truth, decode_png(b["overlays"]["ground_truth"]))
    assert a["scores"] == b["scores"] and set(a["scores"]) == set(a["overlays"]["explanations"])
    for scores in a["scores"].values():
        assert set(scores) == {"ebpg", "iou", "bbox", "drop", "increase"}
        assert all(0.0 <= v <= 100.0 for v in scores.values())
    gt_classes = {CLASS_NAMES[c] for c in np.unique(np.asarray(Image.open(
        root / "processed" / "masks" / "train" / "train_000.png"))) if 0 < c < len(CLASS_NAMES)}
    assert set(a["scores"]) | set(a["skipped"]) >= gt_classes


def decode_layer(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_analyze_shows_the_image_at_its_own_size_and_accounts_for_all_time(client, root):
    width, height = 96, 80  # not the model's 64 x 64 input
    buffer = io.BytesIO()
    Image.open(root / "processed" / "images" / "train" / "train_000.png").resize((width, height)).save(buffer, "PNG")
    doc = labelme_doc(root)
    for shape in doc["shapes"]:
        shape["points"] = [[x * width / SIZE, y * height / SIZE] for x, y in shape["points"]]
    doc.update(imageWidth=width, imageHeight=height)
    response = post_analyze(client, buffer.getvalue(), json.dumps(doc).encode())
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert data["image_size"] == data["display_size"] == [width, height] and data["size"] == [SIZE, SIZE]
    for layer in (data["layers"]["prediction"], data["layers"]["ground_truth"], *data["layers"]["explanations"].values()):
        assert decode_layer(layer).size == (width, height)
    prediction = decode_layer(data["layers"]["prediction"])
    assert prediction.mode == "P" and prediction.info.get("transparency") == 0  # background shows the image
    assert set(np.unique(np.asarray(decode_layer(data["layers"]["ground_truth"])))) > {0}
    assert sum(a["pixels"] for a in data["areas"].values()) == width * height
    legend = {row["name"]: row for row in data["legend"]}
    assert set(CLASS_NAMES) < set(legend) and "ignored" in legend["void"]["help"]
    assert len(data["colormap"]) == 256 and data["score_info"]["drop"]["better"] == "lower"
    timing = data["timing_ms"]
    parts = {k: v for k, v in timing.items() if k != "total"}
    assert {"receive", "decode", "load_model", "annotation", "wait", "preprocess", "predict", "explain",
            "scores", "upsample", "encode", "json", "other"} <= set(parts)
    assert abs(sum(parts.values()) - timing["total"]) <= 0.1 * len(parts)
    assert timing["other"] < 0.2 * timing["total"]


def test_a_false_positive_class_is_explained_and_labelled(client, root):
    plain = post_analyze(client, image_bytes(root)).get_json()
    predicted = sorted(n for n, a in plain["areas"].items() if n != "background" and a["pixels"] > 0)
    assert predicted  # the random model predicts some foreground class on this image
    empty = {"shapes": [], "imagePath": "train_000.png", "imageWidth": SIZE, "imageHeight": SIZE}
    data = post_analyze(client, image_bytes(root), json.dumps(empty).encode()).get_json()
    assert data["explained"] == {n: "false_positive" for n in predicted}
    assert sorted(data["layers"]["explanations"]) == predicted and data["scores"] == {}
    assert not any(reason == "predicted_not_in_gt" for reason in data["skipped"].values())
    for scores in data["false_positives"].values():
        assert scores["ebpg"] is scores["iou"] is scores["bbox"] is None  # nothing annotated to compare with
        assert 0.0 <= scores["drop"] <= 100.0 and scores["increase"] in (0.0, 100.0)


def test_bad_uploads_are_refused(client, root):
    assert_plain_error(post_analyze(client, b"GIF89a this is not really an image"), 400, "not a readable image")
    assert_plain_error(post_analyze(client, b"%PDF-1.4\n" + bytes(range(256))), 400, "not a readable image")
    assert_plain_error(post_analyze(client, b""), 400, "empty")
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(big, "PNG")
    assert len(big.getvalue()) > 2**20
    assert_plain_error(post_analyze(client, big.getvalue()), 413, "too large")
    assert_plain_error(client.post("/api/analyze", data={"model": "tiny", "method": "gradcam"}), 400, "image")


def test_decompression_bomb_is_refused(root):
    small_limit = make_app(root, max_image_pixels=SIZE * SIZE).test_client()
    wide = io.BytesIO()
    Image.new("RGB", (SIZE * 4, SIZE * 4)).save(wide, "PNG")  # tiny file, too many pixels
    assert_plain_error(post_analyze(small_limit, wide.getvalue()), 413, "pixels")


def test_malformed_annotations_are_refused(client, root):
    image = image_bytes(root)
    assert_plain_error(post_analyze(client, image, b"{not json"), 400, "train_000.json", "JSON")
    assert_plain_error(post_analyze(client, image, b'{"foo": 1}'), 400, "neither labelme")
    doc = labelme_doc(root)
    doc["shapes"][0]["points"] = [[1, 1], [2, 2]]
    assert_plain_error(post_analyze(client, image, json.dumps(doc).encode()), 400, "shapes[0].points", "3 points")
    doc = labelme_doc(root)
    doc["shapes"][0]["label"] = "giraffe"
    assert_plain_error(post_analyze(client, image, json.dumps(doc).encode()), 400, "shapes[0].label", "giraffe")
    doc = labelme_doc(root)
    doc["imageWidth"] = 999
    assert_plain_error(post_analyze(client, image, json.dumps(doc).encode()), 400, "imageWidth")
    coco = json.loads((root / "processed" / "annotations" / "train.json").read_text())
    coco["annotations"][0]["segmentation"] = "oops"
    assert_plain_error(post_analyze(client, image, json.dumps(coco).encode(), "c.json"), 400, "segmentation")
    assert not any((root / "scratch").iterdir())  # the scratch copies are gone


def test_model_and_method_come_only_from_the_registry(client, root):
    secret = root / "ckpt" / "best.pt"
    for model in ("../ckpt/best.pt", str(secret), "tiny/../tiny", ""):
        assert_plain_error(post_analyze(client, image_bytes(root), model=model), 404, "unknown checkpoint id")
    assert_plain_error(post_analyze(client, image_bytes(root), method="../../etc/passwd"), 400, "unknown method")
    with pytest.raises(ValueError, match="checkpoint id"):
        CheckpointRegistry({"../evil": secret})


def test_review_list_and_accept(client, root, review):
    data = client.get("/api/review").get_json()
    assert [p["proposal_id"] for p in data["proposals"]] == review
    assert data["counts"] == {"pending": len(review), "accept": 0, "reject": 0}
    assert all("region" not in p for p in data["proposals"])
    first = data["proposals"][0]
    response = client.post("/api/review", json={"proposal_id": first["proposal_id"], "version": first["version"],
                                                "decision": "accept", "note": "clearly a cable"})
    assert response.status_code == 200 and response.get_json()["decision"] == "accept"
    stored = {p.proposal_id: p for p in read_review(root / "review" / "review.csv")}
    assert stored[first["proposal_id"]].decision == "accept" and stored[first["proposal_id"]].note == "clearly a cable"
    assert all(stored[i].decision == "pending" for i in review[1:])
    # a note is stored as one line, never as a spreadsheet formula
    version = response.get_json()["version"]
    response = client.post("/api/review", json={"proposal_id": first["proposal_id"], "version": version,
                                                "note": '=HYPERLINK("http://x")\nsecond line'})
    assert response.status_code == 200
    assert read_review(root / "review" / "review.csv")[0].note == '\'=HYPERLINK("http://x") second line'


def test_review_edits_merge_per_row_and_survive_restart(client, root, review):
    rows = {p["proposal_id"]: p for p in client.get("/api/review").get_json()["proposals"]}
    enlarge = next(p for p in rows.values() if p["kind"] == "enlarge")
    unlabelled = next(p for p in rows.values() if p["kind"] == "unlabelled")
    # two tabs loaded the same list; each edits its own row: both land
    assert client.post("/api/review", json={"proposal_id": enlarge["proposal_id"], "version": enlarge["version"],
                                            "decision": "accept", "k": 4}).status_code == 200
    assert client.post("/api/review", json={"proposal_id": unlabelled["proposal_id"],
                                            "version": unlabelled["version"], "decision": "reject"}).status_code == 200
    # the second tab edits the first row from its stale copy: refused with the current row
    stale = client.post("/api/review", json={"proposal_id": enlarge["proposal_id"], "version": enlarge["version"],
                                             "decision": "reject"})
    assert_plain_error(stale, 409, "changed elsewhere")
    assert stale.get_json()["current"]["decision"] == "accept" and stale.get_json()["current"]["k"] == 4
    # a restarted server (a new app on the same file) sees every decision
    fresh = make_app(root).test_client()
    now = {p["proposal_id"]: p for p in fresh.get("/api/review").get_json()["proposals"]}
    assert (now[enlarge["proposal_id"]]["decision"], now[enlarge["proposal_id"]]["k"]) == ("accept", 4)
    assert now[unlabelled["proposal_id"]]["decision"] == "reject"


def test_concurrent_edits_of_different_rows_all_persist(root, review):
    app = make_app(root)
    rows = app.test_client().get("/api/review").get_json()["proposals"]
    results = []

    def accept(row):
        results.append(app.test_client().post("/api/review", json={
            "proposal_id": row["proposal_id"], "version": row["version"], "decision": "accept",
            "label": row["label_choices"][0]}).status_code)

    threads = [threading.Thread(target=accept, args=(row,)) for row in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * len(rows)
    assert {p.decision for p in read_review(root / "review" / "review.csv")} == {"accept"}


def test_an_unlabelled_region_is_accepted_only_with_a_label_it_may_take(root, review):
    client = make_app(root).test_client()
    rows = {p["proposal_id"]: p for p in client.get("/api/review").get_json()["proposals"]}
    first, second = [p for p in rows.values() if p["kind"] == "unlabelled"][:2]
    enlarge = next(p for p in rows.values() if p["kind"] == "enlarge")
    assert (first["label"], first["label_choices"]) == ("", ["cable", "perplexed"])
    assert (enlarge["label"], enlarge["label_choices"]) == ("cable", ["cable"])
    path = root / "review" / "review.csv"
    before = path.read_bytes()
    base = {"proposal_id": first["proposal_id"], "version": first["version"]}
    assert_plain_error(client.post("/api/review", json={**base, "decision": "accept"}), 400,
                       first["proposal_id"], "field 'label' is empty but the decision is accept", "cable or perplexed")
    assert_plain_error(client.post("/api/review", json={**base, "label": "tower_lattice"}), 400,
                       "field 'label' must be one of cable, perplexed")
    assert_plain_error(client.post("/api/review", json={**base, "label": ["cable"]}), 400, "field 'label'")
    assert_plain_error(client.post("/api/review", json={"proposal_id": enlarge["proposal_id"], "version": enlarge["version"],
                                                        "label": "perplexed"}), 400, "field 'label' must be one of cable,")
    assert path.read_bytes() == before            # nothing refused was written
    chosen = client.post("/api/review", json={**base, "label": "perplexed"})   # chosen first, accepted later
    assert chosen.status_code == 200 and (chosen.get_json()["label"], chosen.get_json()["decision"]) == ("perplexed", "pending")
    accepted = client.post("/api/review", json={**base, "version": chosen.get_json()["version"], "decision": "accept"})
    assert accepted.status_code == 200 and accepted.get_json()["decided_by"] == "expert"
    both = client.post("/api/review", json={"proposal_id": second["proposal_id"], "version": second["version"],
                                            "decision": "accept", "label": "cable"})    # or both at once
    assert both.status_code == 200
    stored = {p.proposal_id: p for p in read_review(path)}
    assert (stored[first["proposal_id"]].decision, stored[first["proposal_id"]].label) == ("accept", "perplexed")
    assert (stored[second["proposal_id"]].decision, stored[second["proposal_id"]].label) == ("accept", "cable")
    # an accepted region keeps a label: clearing it is refused, changing it is the expert's decision
    assert_plain_error(client.post("/api/review", json={"proposal_id": second["proposal_id"],
                                                        "version": both.get_json()["version"], "label": ""}), 400, "'label'")


def test_k_is_bounded_by_the_configured_k_max(root, review):
    client = make_app(root, k_max=3, annotations_file=root / "processed" / "annotations" / "train.json").test_client()
    data = client.get("/api/review").get_json()
    assert data["k_max"] == 3
    enlarge = next(p for p in data["proposals"] if p["kind"] == "enlarge")
    base = {"proposal_id": enlarge["proposal_id"], "version": enlarge["version"]}
    assert_plain_error(client.post("/api/review", json={**base, "k": 4}), 400, "field 'k' must be an integer from 0 to 3")
    assert_plain_error(client.get("/api/review/panel", query_string={"id": enlarge["proposal_id"], "k": 4}), 400,
                       "from 0 to 3")
    assert_plain_error(client.get("/api/review/panel", query_string={"id": enlarge["proposal_id"], "k": "9" * 5000}),
                       400, "'k'")
    assert client.get("/api/review/panel", query_string={"id": enlarge["proposal_id"], "k": 3}).status_code == 200
    assert client.post("/api/review", json={**base, "k": 3}).status_code == 200
    assert "max: kMax" in client.get("/review").get_data(as_text=True)   # the page's k box takes its bound


def test_review_bad_updates(client, root, review):
    rows = client.get("/api/review").get_json()["proposals"]
    unlabelled = next(p for p in rows if p["kind"] == "unlabelled")
    enlarge = next(p for p in rows if p["kind"] == "enlarge")
    base = {"proposal_id": enlarge["proposal_id"], "version": enlarge["version"]}
    assert_plain_error(client.post("/api/review", json={**base, "decision": "maybe"}), 400, "decision")
    assert_plain_error(client.post("/api/review", json={**base, "k": -1}), 400, "'k'")
    assert_plain_error(client.post("/api/review", json={**base, "k": "3; rm -rf /"}), 400, "'k'")
    assert_plain_error(client.post("/api/review", json={**base, "note": "x" * 501}), 400, "note")
    assert_plain_error(client.post("/api/review", json={"proposal_id": unlabelled["proposal_id"],
                                                        "version": unlabelled["version"], "k": 3}), 400, "only enlargements")
    assert_plain_error(client.post("/api/review", json={**base, "proposal_id": "../../etc/passwd"}), 404, "no proposal")
    assert_plain_error(client.post("/api/review", data="decision=accept"), 400, "JSON object")
    assert_plain_error(client.post("/api/review", json={"decision": "accept"}), 400, "proposal_id")
    assert {p.decision for p in read_review(root / "review" / "review.csv")} == {"pending"}


def _green(tile: np.ndarray) -> int:
    """Pixels drawn in the proposal colour (the proposed region)."""
    return int((np.abs(tile.astype(int) - [0, 255, 120]).max(axis=2) < 90).sum())


def test_review_panels_and_traversal(client, root, review):
    response = client.get("/api/review/panel", query_string={"id": review[0]})
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Tiles"].split("|")[:2] == ["image", "ground truth"]
    drawn = np.asarray(Image.open(io.BytesIO(response.data)))
    assert drawn.shape == (SIZE, 3 * SIZE + 8, 3)  # image | ground truth | proposal
    proposal = next(p for p in read_review(root / "review" / "review.csv") if p.proposal_id == review[0])
    panel = root / "review" / "panels" / sheet_name(proposal.image)
    panel.parent.mkdir(exist_ok=True)
    Image.new("RGB", (SIZE, SIZE)).save(panel)       # a plain picture, not a sheet: not used
    assert client.get("/api/review/panel", query_string={"id": review[0]}).headers["X-Tiles"].startswith("image|")

    def solid(colour) -> np.ndarray:
        return np.full((SIZE, SIZE, 3), colour, np.uint8)

    save_sheet(panel, {TRUTH: solid(0), PREDICTION: solid((10, 20, 30)),   # the stage's prediction tile
                       explanation_tile(proposal.class_name): solid((40, 50, 60)),   # and explanation tile
                       proposals_tile(proposal.class_name): solid((0, 255, 120))})   # never served
    Image.new("RGB", (10, 7)).save(panel.with_name("other.png"))
    try:
        served = client.get("/api/review/panel", query_string={"id": review[0]})
        tiles = served.headers["X-Tiles"].split("|")
        assert tiles[:3] == ["ground truth", "prediction", "explanation"] and tiles[3].startswith("proposal (k=2")
        pixels = np.asarray(Image.open(io.BytesIO(served.data)))
        assert pixels.shape == (SIZE, 4 * SIZE + 12, 3)
        assert (pixels[:, SIZE + 4:2 * SIZE + 4] == (10, 20, 30)).all()
        assert (pixels[:, 2 * SIZE + 8:3 * SIZE + 8] == (40, 50, 60)).all()
        assert 0 < _green(pixels[:, 3 * SIZE + 12:]) < SIZE * SIZE  # redrawn, not the stage's tile
    finally:
        panel.unlink()
    assert_plain_error(client.get("/api/review/panel", query_string={"id": "../../../etc/passwd"}), 404)
    evil = Proposal("x/unlabelled-cable/0", "../../ckpt/best", "unlabelled", "cable", 0.5, "PPYo1", [0, 0, 1, 1], 1)
    write_review(root / "review" / "review.csv", [evil])
    assert_plain_error(client.get("/api/review/panel", query_string={"id": evil.proposal_id}), 400, "plain file name")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _declared_png(width: int, height: int, tiles: str) -> bytes:
    """A PNG whose header declares width x height and the tile names, with one row of pixels."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    text = _chunk(b"tEXt", TILES_KEY.encode() + b"\0" + tiles.encode())
    pixels = _chunk(b"IDAT", zlib.compress(b"\0" + bytes(3 * width)))
    return b"\x89PNG\r\n\x1a\n" + header + text + pixels + _chunk(b"IEND", b"")


def test_a_tampered_sheet_is_left_aside_and_the_panel_still_drawn(client, root, review, caplog):
    proposal = next(p for p in read_review(root / "review" / "review.csv") if p.proposal_id == review[0])
    panel = root / "review" / "panels" / sheet_name(proposal.image)
    panel.parent.mkdir(exist_ok=True)
    names = [TRUTH, PREDICTION, explanation_tile(proposal.class_name), proposals_tile(proposal.class_name)]
    save_sheet(panel, {n: np.full((SIZE, SIZE, 3), 40 * i, np.uint8) for i, n in enumerate(names)})
    sheet = panel.read_bytes()
    assert client.get("/api/review/panel", query_string={"id": review[0]}).headers["X-Tiles"].startswith("ground truth|")
    width = 4 * SIZE + 3 * 4
    tampered = {
        "tile names not JSON": _declared_png(width, SIZE, "not json ["),
        "tile names a number": _declared_png(width, SIZE, "5"),
        "tile names 50,000 deep": _declared_png(width, SIZE, "[" * 50_000 + "]" * 50_000),
        "30000 x 30000 declared": _declared_png(30_000, 30_000, json.dumps(names)),
        "9000 x 9000 declared": _declared_png(9000, 9000, json.dumps(names)),
        "truncated": sheet[:len(sheet) // 2],
        "GIF bytes": b"GIF89a" + bytes(range(256)),
    }
    why = {}
    try:
        for what, data in tampered.items():
            panel.write_bytes(data)
            caplog.clear()
            response = client.get("/api/review/panel", query_string={"id": review[0]})
            assert response.status_code == 200, (what, response.get_data(as_text=True))
            assert response.headers["X-Tiles"].startswith("image|ground truth|proposal"), what   # drawn without it
            assert f"the sheet is not used: {sheet_name(proposal.image)}: " in caplog.text, what  # the log says why
            why[what] = caplog.text
    finally:
        panel.unlink()
    assert "not a list of distinct tile names" in why["tile names 50,000 deep"]
    assert "DecompressionBombError" in why["30000 x 30000 declared"]
    assert "not this image's 64x64" in why["9000 x 9000 declared"]   # refused by its header: never decoded
    assert "do not decode" in why["truncated"] and "not a readable image" in why["GIF bytes"]


def test_changing_k_redraws_the_proposal(root, review):
    client = make_app(root, annotations_file=root / "processed" / "annotations" / "train.json").test_client()
    enlarge = review[0]
    areas = []
    for k in (1, 2, 5):
        response = client.get("/api/review/panel", query_string={"id": enlarge, "k": k})
        assert response.status_code == 200 and f"k={k}," in response.headers["X-Tiles"]
        areas.append(_green(np.asarray(Image.open(io.BytesIO(response.data)))[:, 2 * SIZE + 8:]))
    assert 0 < areas[0] < areas[1] < areas[2]
    # without the split's annotations only the stored k can be drawn, and the page is told why
    plain = make_app(root).test_client()
    assert plain.get("/api/review/panel", query_string={"id": enlarge}).status_code == 200
    assert_plain_error(plain.get("/api/review/panel", query_string={"id": enlarge, "k": 5}), 409, "cannot redraw")
    assert_plain_error(client.get("/api/review/panel", query_string={"id": enlarge, "k": "9; x"}), 400, "'k'")
    cropped = client.get("/api/review/panel", query_string={"id": enlarge, "crop": "1"})
    assert np.asarray(Image.open(io.BytesIO(cropped.data))).shape[1] <= 3 * SIZE + 8


def test_review_paging_filters_and_sort(client, root, review):
    everything = client.get("/api/review").get_json()
    assert everything["total"] == everything["matched"] == len(review) and everything["limit"] is None
    page = client.get("/api/review", query_string={"limit": 2, "offset": 1}).get_json()
    assert [p["proposal_id"] for p in page["proposals"]] == review[1:3] and page["matched"] == len(review)
    kinds = client.get("/api/review", query_string={"kind": "unlabelled"}).get_json()
    assert kinds["matched"] == sum("unlabelled" in i for i in review) > 0
    assert {p["kind"] for p in kinds["proposals"]} == {"unlabelled"}
    by_area = client.get("/api/review", query_string={"sort": "area", "order": "desc"}).get_json()["proposals"]
    assert [p["area"] for p in by_area] == sorted((p["area"] for p in by_area), reverse=True)
    assert client.get("/api/review", query_string={"class": "cable"}).get_json()["facets"]["classes"] == \
        sorted({p["class_name"] for p in everything["proposals"]})
    first = everything["proposals"][0]
    client.post("/api/review", json={"proposal_id": first["proposal_id"], "version": first["version"],
                                     "decision": "accept"})
    pending = client.get("/api/review", query_string={"pending": "1", "limit": 500}).get_json()
    assert pending["matched"] == len(review) - 1 and first["proposal_id"] not in {p["proposal_id"] for p in pending["proposals"]}
    expert = client.get("/api/review", query_string={"decided_by": "expert"}).get_json()
    assert [p["proposal_id"] for p in expert["proposals"]] == [first["proposal_id"]]
    assert expert["proposals"][0]["decided_by"] == "expert" and expert["decided_by"]["expert"] == 1
    for bad, word in (({"limit": 0}, "'limit'"), ({"sort": "evil"}, "'sort'"), ({"kind": "x"}, "'kind'"),
                      ({"class": "ghost"}, "'class'"), ({"pending": "1", "decision": "accept"}, "contradict")):
        assert_plain_error(client.get("/api/review", query_string=bad), 400, word)


def test_review_without_file(root):
    client = make_app(root, review_file=root / "missing" / "review.csv").test_client()
    assert_plain_error(client.get("/api/review"), 404, "stage=augment")
    none = make_app(root, review_file=None).test_client()
    assert_plain_error(none.get("/api/review"), 404, "no review file configured")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_is_refused_not_a_crash(client, root, review):
    for depth in (100, 100_000):
        assert_plain_error(post_analyze(client, image_bytes(root), nested(depth)), 400, "nested deeper")
        body = b'{"proposal_id": "x", "version": "y", "note": ' + nested(depth) + b"}"
        assert_plain_error(client.post("/api/review", data=body, content_type="application/json"),
                           400, "nested deeper")
    huge = b'{"proposal_id": "x", "version": "y", "k": ' + b"9" * 5000 + b"}"   # past Python's int digits
    assert_plain_error(client.post("/api/review", data=huge, content_type="application/json"), 400, "JSON")


def test_review_field_longer_than_csv_default_limit_is_read(client, root, review):
    proposals = read_review(root / "review" / "review.csv")
    proposals[0].note = "n" * 200_000
    write_review(root / "review" / "review.csv", proposals)
    response = client.get("/api/review")
    assert response.status_code == 200 and response.get_json()["proposals"][0]["note"] == "n" * 200_000


def _tamper(path: Path, changes: dict[int, dict[str, str]]) -> None:
    """Set fields of rows (0 = the first row) as someone editing the CSV by hand would."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for index, fields in changes.items():
        rows[index].update(fields)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_tampered_row_is_shown_as_malformed_and_the_others_keep_working(root, review):
    path = root / "review" / "review.csv"
    enlargements = [i for i, pid in enumerate(review) if "/enlarge/" in pid]
    assert len(enlargements) >= 3
    bad = dict(zip(enlargements, ({"bbox": "[1e400, 0, 1, 1]"}, {"bbox": "[" * 100_000 + "]" * 100_000},
                                  {"k": "1" + "0" * 30})))
    _tamper(path, bad)
    tampered = path.read_text().splitlines()
    client = make_app(root, annotations_file=root / "processed" / "annotations" / "train.json").test_client()
    data = client.get("/api/review").get_json()
    assert data["malformed"]["count"] == 3 and data["total"] == len(review) - 3
    assert [r["row"] for r in data["malformed"]["rows"]] == [i + 2 for i in bad]
    errors = [r["error"] for r in data["malformed"]["rows"]]
    for (i, fields), error in zip(bad.items(), errors):
        field = next(iter(fields))
        assert error.startswith(f"review.csv, row {i + 2}: field '{field}' must be") and len(error) < 200, error
    assert "got '[1e400, 0, 1, 1]'" in errors[0] and "(200000 chars)" in errors[1] and "from 0 to 50" in errors[2]
    for i in bad:
        assert_plain_error(client.get("/api/review/panel", query_string={"id": review[i]}), 409,
                           f"row {i + 2}", "fix that row")
        assert_plain_error(client.post("/api/review", json={"proposal_id": review[i], "version": "x",
                                                            "decision": "accept"}), 409, f"row {i + 2}")
    good = next(p for p in data["proposals"] if p["kind"] == "enlarge")
    assert client.get("/api/review/panel", query_string={"id": good["proposal_id"], "k": 3}).status_code == 200
    saved = client.post("/api/review", json={"proposal_id": good["proposal_id"], "version": good["version"],
                                             "decision": "accept"})
    assert saved.status_code == 200
    now = path.read_text().splitlines()
    assert [now[i + 1] for i in bad] == [tampered[i + 1] for i in bad]      # the bad rows as they were left


def test_a_score_a_ranker_could_not_give_is_sent_as_null(client, root, review):
    proposals = read_review(root / "review" / "review.csv")
    proposals[0].score = float("nan")      # e.g. the cam ranker on an image where the class is not predicted
    write_review(root / "review" / "review.csv", proposals)
    response = client.get("/api/review", query_string={"sort": "score", "order": "desc"})
    rows = json.loads(response.get_data(as_text=True), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert rows["proposals"][-1]["score"] is None      # the lowest: reviewed last


def test_garbage_region_is_a_plain_error(client, root, review):
    proposals = read_review(root / "review" / "review.csv")
    for counts in ("garbage!!", "", "0", "\u00e9t\u00e9"):
        proposals[0].region = counts
        write_review(root / "review" / "review.csv", proposals)
        assert_plain_error(client.get("/api/review/panel", query_string={"id": review[0]}), 409,
                           "field 'region'", "RLE")


@pytest.mark.parametrize("damage", ["truncated", "hostile", "deleted"])
def test_a_broken_registered_checkpoint_is_a_plain_error(root, tmp_path, damage):
    path = tmp_path / "best.pt"
    path.write_bytes((root / "ckpt" / "best.pt").read_bytes())
    client = make_app(root, registry=CheckpointRegistry({"tiny": path}, "cpu", SIZE)).test_client()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "hostile":
        import torch
        torch.save({"model": threading.Thread}, path)  # a file that needs code to load
    else:
        path.unlink()
    for _ in range(2):
        text = assert_plain_error(post_analyze(client, image_bytes(root)), 409, "checkpoint 'tiny' cannot be loaded")
        assert str(path) not in text
    assert client.get("/api/models").status_code == 200


def test_coco_annotation_that_is_not_an_object_is_named(client, root):
    coco = json.loads((root / "processed" / "annotations" / "train.json").read_text())
    coco["annotations"] = [1, *coco["annotations"]]
    assert_plain_error(post_analyze(client, image_bytes(root), json.dumps(coco).encode(), "c.json"), 400,
                       "annotations[0]", "expected an object")


def test_413_says_what_was_too_large(client):
    parts = {f"f{i}": "x" for i in range(1100)}
    assert_plain_error(client.post("/api/analyze", data=parts, content_type="multipart/form-data"), 413,
                       "more than 1000 parts")


def test_only_loopback_and_configured_hosts_are_served(root):
    client = make_app(root, allowed_hosts=["inspect.lan"]).test_client()
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000", "inspect.lan:8000"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        assert_plain_error(client.get("/api/review", headers={"Host": host}), 421, "not served here")
