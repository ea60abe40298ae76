"""End to end in a real headless browser (Debian's chromium, driven by Playwright): upload an image
with its annotation, see the prediction, ground-truth and explanation overlays, accept a proposal
on the review page, and find the decision in the review file. A screenshot of each page is kept."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from processed_factory import write_processed
from serve_factory import write_checkpoint, write_review_file
from werkzeug.serving import make_server

from vqi import PROJECT_ROOT
from vqi.augment.review import read_review
from vqi.classes import CLASS_NAMES
from vqi.serve.app import create_app, fast_methods
from vqi.serve.registry import CheckpointRegistry

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SIZE = 64

if os.environ.get("CI") == "true":  # CI installs both (.ci/run): a missing one is a failure there
    from playwright import sync_api
else:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium); with CI=true this test fails instead",
                    allow_module_level=True)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture
def server(tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 2}, size=SIZE)
    review_file = tmp_path / "review" / "review.csv"
    ids = write_review_file(review_file, processed)
    app = create_app(CheckpointRegistry({"tiny": write_checkpoint(tmp_path / "best.pt", SIZE)}, "cpu", SIZE),
                     fast_methods(["gradcam"]), review_file, processed / "images" / "train",
                     processed / "masks" / "train", tmp_path / "scratch",
                     {n: n for n in CLASS_NAMES[1:]} | {"void": "void"})
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/", processed, review_file, ids
    httpd.shutdown()
    thread.join(10)


def _keep(shot: Path) -> None:
    """Copy a screenshot to outputs/screenshots/ of the project for people to look at."""
    target = PROJECT_ROOT / "outputs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shot, target / shot.name)


def test_upload_see_overlays_and_accept_a_proposal(server, tmp_path):
    url, processed, review_file, ids = server
    doc = json.loads((processed / "annotations" / "train.json").read_text())
    stem = "train_000"
    image_id = next(i["id"] for i in doc["images"] if stem in i["file_name"])
    names = {c["id"]: c["name"] for c in doc["categories"]}
    labelme = {"imageWidth": SIZE, "imageHeight": SIZE, "imagePath": f"{stem}.png", "shapes": [
        {"label": names[a["category_id"]], "points": [a["segmentation"][0][i:i + 2] for i in range(0, len(a["segmentation"][0]), 2)]}
        for a in doc["annotations"] if a["image_id"] == image_id]}
    annotation = tmp_path / f"{stem}.json"
    annotation.write_text(json.dumps(labelme))
    image = processed / "images" / "train" / f"{stem}.png"

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#model option[value=tiny]", state="attached")
            page.set_input_files("#image", str(image))
            page.set_input_files("#annotation", str(annotation))
            page.select_option("#method", "gradcam")
            page.click("#analyze")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            for selector in ("#segmentation", "#ground-truth"):
                assert page.eval_on_selector(selector, "img => img.complete && img.naturalWidth") == SIZE
            explanations = page.eval_on_selector_all(
                "img.explanation", "imgs => imgs.map(i => [i.dataset.class, i.complete && i.naturalWidth])")
            assert explanations and all(width == SIZE for _, width in explanations)
            assert page.locator("#areas tbody tr").count() == len(CLASS_NAMES)
            assert "ms" in page.inner_text("#timing")
            assert not page.is_hidden("#scores-block")
            inspect_shot = tmp_path / "inspect.png"
            page.screenshot(path=str(inspect_shot), full_page=True)

            page.goto(url + "review")
            row = page.locator(f'tr[data-id="{ids[0]}"]')
            row.wait_for()
            page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            row.locator("button.accept").click()
            page.wait_for_function(f"() => document.querySelector('tr[data-id=\"{ids[0]}\"]').className === 'accept'")
            assert row.locator("td.row-status").inner_text() == "saved"
            review_shot = tmp_path / "review.png"
            page.screenshot(path=str(review_shot), full_page=True)
        finally:
            browser.close()

    decisions = {p.proposal_id: p.decision for p in read_review(review_file)}
    assert decisions[ids[0]] == "accept" and all(decisions[i] == "pending" for i in ids[1:])
    for shot in (inspect_shot, review_shot):
        assert Image.open(shot).size[0] > 100
        _keep(shot)
