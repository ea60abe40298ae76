"""stage=augment end to end on a tiny prepared set and a random-weight checkpoint: proposals,
the review file round trip, and the original annotations left byte-identical."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image
import torch
from processed_factory import write_processed
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from vqi import tracking
from vqi.augment import regions
from vqi.classes import CLASS_NAMES
from vqi.data.dataset import SegmentationDataset
from vqi.data.rasterize import instance_mask
from vqi.data.transforms import eval_transform
from vqi.models.checkpoint import load_model, save_checkpoint
from vqi.models.factory import build_model
from vqi.stages import augment


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


ARCH = "deeplabv3_resnet50"


@pytest.fixture(scope="module")
def cable_model(tmp_path_factory):
    """A random-weight DeepLabv3-ResNet50 whose cable bias is set so that about a third of the
    pixels are predicted cable, in image-dependent places (a random MobileNetV3 head predicts
    one constant class, which would leave nothing to propose)."""
    root = tmp_path_factory.mktemp("augment")
    processed = write_processed(root / "processed", {"train": 4, "test": 1}, size=48, seed=3)
    torch.manual_seed(0)
    config = {"arch": ARCH, "num_classes": len(CLASS_NAMES), "weights": None,
              "weights_backbone": None, "aux_loss": False}
    model = build_model(**config).eval()
    images = torch.stack([img for img, _, _ in SegmentationDataset(processed, "train", eval_transform(48))])
    with torch.no_grad():
        logits = model(images)["out"]
    margin = logits[:, 1] - logits[:, [0, 2, 3, 4]].max(dim=1).values
    with torch.no_grad():
        model.classifier[-1].bias[1] -= margin.flatten().quantile(0.65)
    ckpt = root / "best.pt"
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "class_names": list(CLASS_NAMES),
                     "model_config": config}, ckpt)
    return processed, ckpt


@pytest.fixture
def setup(tmp_path, make_cfg, cable_model):
    source, ckpt = cable_model
    processed = tmp_path / "processed"
    shutil.copytree(source, processed)

    def cfg(*extra):
        return make_cfg(f"model={ARCH}", f"data.processed_dir={processed}", "data.image_size=48",
                        f"augment.checkpoint={ckpt}", "augment.method=gradcam", "device=cpu",
                        # random weights: propose generously so every kind of proposal appears
                        "augment.unlabelled.min_area=1", "augment.unlabelled.margin=1", *extra, stage="augment")
    return processed, cfg


def _run(cfg):
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        return augment.run(cfg)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _masks(processed, split):
    return {p.stem: np.array(Image.open(p)) for p in (processed / "masks" / split).glob("*.png")}


def test_accepted_proposals_change_exactly_their_regions(setup):
    processed, make = setup
    originals = _digest(processed / "annotations") | _digest(processed / "masks" / "train")
    cfg = make("augment.policy=accept_all")
    metrics = _run(cfg)
    rows = _rows(cfg.augment.review_file)
    assert metrics["proposals"] == len(rows) > 0 and metrics["accepted"] == len(rows)
    assert {r["kind"] for r in rows} == {"enlarge", "unlabelled"}
    assert {r["label"] for r in rows if r["kind"] == "unlabelled"} == {"perplexed"}   # unlabelled_label
    after = _digest(processed / "annotations") | _digest(processed / "masks" / "train")
    assert {k: after[k] for k in originals} == originals        # the originals, byte for byte
    old, new = _masks(processed, "train"), _masks(processed, "train_augmented")
    for stem in old:
        expected = np.zeros_like(old[stem], bool)
        for r in rows:
            if r["image"] == stem:
                expected |= regions.decode(r["region"], *old[stem].shape)
        assert np.array_equal(old[stem] != new[stem], expected & (old[stem] == 0)), stem
    doc = json.loads((processed / "annotations" / "train_augmented.json").read_text())
    assert any(c["name"] == "perplexed" for c in doc["categories"])
    assert Path(cfg.augment.review_file).with_suffix(".html").is_file()
    assert any(Path(cfg.augment.review_dir, "panels").glob("*.png"))


def test_rejected_proposals_change_nothing_and_the_expert_file_is_kept(setup):
    processed, make = setup
    cfg = make("augment.policy=threshold", "augment.accept_threshold=2.0")
    metrics = _run(cfg)
    assert metrics["proposals"] > 0 and metrics["accepted"] == 0
    old, new = _masks(processed, "train"), _masks(processed, "train_augmented")
    assert all(np.array_equal(old[s], new[s]) for s in old)

    # The expert accepts an unlabelled region without choosing its label: refused, naming the field.
    rows = _rows(cfg.augment.review_file)
    first = next(i for i, r in enumerate(rows) if r["kind"] == "unlabelled")
    rows[first]["decision"] = "accept"
    _write_rows(cfg.augment.review_file, rows)
    with pytest.raises(ValueError, match=rf"review.csv, row {first + 2}: field 'label' is empty but the decision is accept"):
        _run(make("augment.policy=accept_all"))

    # An enlargement accepted at a k above k_max is refused before anything is applied.
    big = next(i for i, r in enumerate(rows) if r["kind"] == "enlarge")
    rows[first]["decision"], rows[big]["decision"], rows[big]["k"] = "pending", "accept", "9"
    _write_rows(cfg.augment.review_file, rows)
    with pytest.raises(ValueError, match=r"field 'k' is 9, above augment.enlarge.k_max=3"):
        _run(make("augment.policy=accept_all"))
    rows[first]["decision"], rows[big]["decision"], rows[big]["k"] = "accept", "pending", "1"

    # Labelled as a missed cable, a rerun applies it as cable and keeps the expert's file.
    rows[first]["label"] = "cable"
    _write_rows(cfg.augment.review_file, rows)
    edited = Path(cfg.augment.review_file).read_bytes()
    assert _run(make("augment.policy=accept_all"))["accepted"] == 1
    assert Path(cfg.augment.review_file).read_bytes() == edited
    new = _masks(processed, "train_augmented")
    stem = rows[first]["image"]
    region = regions.decode(rows[first]["region"], 48, 48) & (old[stem] == 0)
    assert np.array_equal(old[stem] != new[stem], region) and (new[stem][region] == 1).all()


def test_force_keeps_the_previous_review_file(setup):
    processed, make = setup
    cfg = make("augment.policy=review")
    metrics = _run(cfg)
    assert metrics["pending"] == metrics["proposals"]
    _run(make("augment.policy=review", "augment.force=true"))
    kept = list(Path(cfg.augment.review_dir).glob("review.*.csv"))
    assert len(kept) == 1 and Path(cfg.augment.review_file).is_file()


def test_a_review_file_from_another_method_is_refused_until_force(setup):
    processed, make = setup
    cfg = make("augment.policy=accept_all")
    _run(cfg)
    with pytest.raises(ValueError, match=r"review.csv was proposed from another baseline \(method was gradcam, "
                                         r"is now hirescam\).*augment.force=true"):
        _run(make("augment.policy=accept_all", "augment.method=hirescam"))
    _run(make("augment.policy=accept_all", "augment.method=hirescam", "augment.force=true"))
    source = json.loads(Path(cfg.augment.review_file).with_suffix(".source.json").read_text())
    assert source["method"] == "hirescam"
    assert len(list(Path(cfg.augment.review_dir).glob("review.*.source.json"))) == 1  # gradcam's, kept


def test_a_bad_review_file_names_its_row_and_field(setup):
    processed, make = setup
    cfg = make("augment.policy=review")
    _run(cfg)
    rows = _rows(cfg.augment.review_file)
    rows[0]["decision"] = "perhaps"
    _write_rows(cfg.augment.review_file, rows)
    with pytest.raises(ValueError, match=r"review.csv, row 2: field 'decision'"):
        _run(cfg)


# --- the known-truth study's arms: dilate, random_cam, the oracle, quality against truth -----

def _write_truth(processed: Path) -> dict[str, np.ndarray]:
    """True masks for the train split: cables one pixel wider than annotated, and a distractor
    stripe (5) on background near the top of each image."""
    truths = {}
    for stem, label in _masks(processed, "train").items():
        truth = label.copy()
        truth[regions.dilate(label == 1, 1) & (label == 0)] = 1
        stripe = np.zeros_like(label, bool)
        stripe[2:4, 4:40] = True
        truth[stripe & (truth == 0)] = 5
        (processed / "masks_truth" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(truth).save(processed / "masks_truth" / "train" / f"{stem}.png")
        truths[stem] = truth
    return truths


def test_dilate_accepts_every_cable_instance_and_no_region(setup):
    processed, make = setup
    cfg = make("augment.policy=dilate", "augment.enlarge.k=1")
    metrics = _run(cfg)
    rows = _rows(cfg.augment.review_file)
    doc = json.loads((processed / "annotations" / "train.json").read_text())
    cables = {(Path(img["file_name"]).stem, a["id"]) for img in doc["images"] for a in doc["annotations"]
              if a["image_id"] == img["id"] and a["category_id"] == 1}
    enlarged = [r for r in rows if r["kind"] == "enlarge"]
    assert {(r["image"], int(r["annotation_id"])) for r in enlarged} == cables   # every instance, no gate
    assert {r["decision"] for r in enlarged} == {"accept"}
    assert {r["decision"] for r in rows if r["kind"] == "unlabelled"} == {"reject"}
    assert metrics["accepted"] == len(enlarged) and "label_iou_cable/after" not in metrics  # no truth here
    old, new = _masks(processed, "train"), _masks(processed, "train_augmented")
    cross = ndimage.generate_binary_structure(2, 1)                   # a 1-px disc
    for img in doc["images"]:
        stem = Path(img["file_name"]).stem
        grown = np.zeros((48, 48), bool)
        for a in doc["annotations"]:
            if a["image_id"] == img["id"] and a["category_id"] == 1:
                instance = instance_mask(a, 48, 48)
                grown |= ndimage.binary_dilation(instance, cross) & ~instance
        assert np.array_equal(old[stem] != new[stem], grown & (old[stem] == 0)), stem


def _best_k_independently(instance, label, truth_cable):
    """k in {0, 1} (a 1-px cross) maximising the instance's IoU against the truth within its reach."""
    cross = ndimage.generate_binary_structure(2, 1)
    reach = ndimage.binary_dilation(instance, cross)
    grown = instance | (reach & (label == 0))
    truth = truth_cable & reach
    ious = [(a & truth).sum() / max((a | truth).sum(), 1) for a in (instance, grown)]
    return int(ious[1] > ious[0])


def test_oracle_decides_by_truth_and_quality_is_reported(setup):
    processed, make = setup
    truths = _write_truth(processed)
    cfg = make("augment.policy=oracle", "augment.enlarge.k=1", "augment.enlarge.k_max=1")
    metrics = _run(cfg)
    rows = _rows(cfg.augment.review_file)
    assert rows and {r["kind"] for r in rows} == {"enlarge", "unlabelled"}
    labels = _masks(processed, "train")
    doc = json.loads((processed / "annotations" / "train.json").read_text())
    anns = {a["id"]: a for a in doc["annotations"]}
    for r in rows:                                    # the decision, recomputed independently
        truth = truths[r["image"]]
        if r["kind"] == "enlarge":
            k = _best_k_independently(instance_mask(anns[int(r["annotation_id"])], 48, 48), labels[r["image"]],
                                      truth == 1)
            assert (r["decision"], int(r["k"])) == ("accept" if k else "reject", 1), r["proposal_id"]
        else:
            region = regions.decode(r["region"], 48, 48)
            share = {c: (truth[region] == c).mean() for c in (1, 5)}
            want = "cable" if share[1] >= 0.5 else "perplexed" if share[5] >= 0.5 else ""
            assert (r["decision"], r["label"]) == ("accept" if want else "reject", want), r["proposal_id"]
    assert any(r["decision"] == "accept" for r in rows) and any(r["decision"] == "reject" for r in rows)
    old, new = _masks(processed, "train"), _masks(processed, "train_augmented")
    changed = sum(((old[s] == 0) & (new[s] == 1)).sum() for s in old)
    correct = sum(((old[s] == 0) & (new[s] == 1) & (truths[s] == 1)).sum() for s in old)
    assert metrics["enlarge/precision"] == pytest.approx(correct / changed)
    missed = sum(((truths[s] == 1) & (old[s] != 1)).sum() for s in old)
    assert metrics["enlarge/recall"] == pytest.approx(correct / missed)
    def cable_iou(masks):
        inter = sum(((masks[s] == 1) & (truths[s] == 1) & (masks[s] != 255)).sum() for s in masks)
        union = sum((((masks[s] == 1) | (truths[s] == 1)) & (masks[s] != 255)).sum() for s in masks)
        return inter / union
    assert metrics["label_iou_cable/before"] == pytest.approx(cable_iou(old))
    assert metrics["label_iou_cable/after"] == pytest.approx(cable_iou(new))
    summary = json.loads((processed / "annotations" / "train_augmented_summary.json").read_text())
    assert summary["policy"] == "oracle" and summary["label_iou"]["after"]["iou_cable"] == pytest.approx(cable_iou(new))


def test_a_fully_fallible_oracle_replaces_every_decision_by_a_wrong_one(setup):
    processed, make = setup
    _write_truth(processed)
    first = make("augment.policy=oracle", "augment.enlarge.k_max=1", "augment.enlarge.k=1")
    _run(first)
    decided = {r["proposal_id"]: (r["decision"], r["label"]) for r in _rows(first.augment.review_file)}
    flipped = make("augment.policy=oracle", "augment.enlarge.k_max=1", "augment.enlarge.k=1",
                   "augment.oracle.flip=1.0", "augment.force=true")
    _run(flipped)
    wrong = {r["proposal_id"]: (r["decision"], r["label"]) for r in _rows(flipped.augment.review_file)}
    assert decided.keys() == wrong.keys() and all(wrong[k] != decided[k] for k in decided)


def test_the_oracle_reviews_only_its_budget_in_ranker_order(setup):
    processed, make = setup
    _write_truth(processed)
    cfg = make("augment.policy=oracle", "augment.ranker=softmax", "augment.oracle.budget=0.3")
    _run(cfg)
    rows = _rows(cfg.augment.review_file)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)                   # the file is in review order
    reviewed = [r["decision"] != "pending" for r in rows]
    assert sum(reviewed) == int(np.ceil(0.3 * len(rows))) and reviewed == sorted(reviewed, reverse=True)


def test_the_oracle_needs_truth(setup):
    processed, make = setup
    with pytest.raises(FileNotFoundError, match="augment.policy=oracle decides from the true masks"):
        _run(make("augment.policy=oracle"))


def test_an_unknown_ranker_names_the_key_and_the_choices(setup):
    processed, make = setup
    with pytest.raises(ValueError, match="augment.ranker: unknown ranker 'cams'; expected one of cam, cam_fine"):
        _run(make("augment.ranker=cams"))


def test_budget_curves_start_at_the_labels_and_end_where_the_oracle_reviews_everything(setup, tmp_path):
    """stage=budget on the tiny split: every ranker's curve starts at the split's label IoU and
    ends at the same value, the one `stage=augment` reaches with the oracle reviewing every
    proposal (a second code path: masks written to disk and measured there)."""
    from vqi.stages import budget

    processed, make = setup
    truths = _write_truth(processed)
    common = ("augment.enlarge.k=1", "augment.enlarge.k_max=2")
    cfg = make(*common, f"budget.output_dir={tmp_path / 'budget'}", "budget.budgets=[0,0.5,1]",
               "budget.thresholds={cam:[0.3]}")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        metrics = budget.run(cfg)
    result = json.loads((tmp_path / "budget" / "budget.json").read_text())
    assert set(result["rankers"]) == {"cam", "cam_fine", "softmax", "cleanlab", "random", "width"}
    assert metrics["proposals"] == result["proposals"] > 0
    full = _run(make(*common, "augment.policy=oracle"))
    for r in result["rankers"].values():
        assert r["curve"][0] == pytest.approx(100 * full["label_iou_cable/before"])
        assert r["curve"][-1] == pytest.approx(100 * full["label_iou_cable/after"])
    assert full["label_iou_cable/after"] > full["label_iou_cable/before"]   # the careful expert helps
    no_expert = _run(make(*common, "augment.policy=threshold", "augment.accept_threshold=0.3", "augment.force=true"))
    assert result["thresholds"]["cam"]["0.3"] == pytest.approx(100 * no_expert["label_iou_cable/after"])
    for r in result["rankers"].values():
        c = r["curve"]
        assert r["aubc"] == pytest.approx(0.5 * (c[0] + c[1]) / 2 + 0.5 * (c[1] + c[2]) / 2)
    # pixel AUC on cable borders, per map the pass computed (cleanlab's probabilities give softmax's);
    # softmax's recomputed here: the model's cable probability on every 1-px ring, scikit-learn's AUC
    assert set(result["pixel_auc_border"]) == {"cam", "cam_fine", "softmax"}
    doc = json.loads((processed / "annotations" / "train.json").read_text())
    by_stem = {Path(img["file_name"]).stem: [a for a in doc["annotations"] if a["image_id"] == img["id"]
                                             and a["category_id"] == 1] for img in doc["images"]}
    model, _ = load_model(cfg.augment.checkpoint, "cpu")
    true_thin, probs = [], []
    for image, label, stem in SegmentationDataset(processed, "train", eval_transform(48)):
        with torch.no_grad():
            cable = torch.softmax(model(image[None])["out"], dim=1)[0, 1].numpy()
        for ann in by_stem[stem]:
            ring = regions.enlargement(instance_mask(ann, 48, 48), label.numpy(), 1)
            true_thin.append(truths[stem][ring] == 1)
            probs.append(cable[ring])
    true_thin, probs = np.concatenate(true_thin), np.concatenate(probs)
    assert result["border_pixels"] == {"pixels": true_thin.size, "true_thin": int(true_thin.sum())}
    assert 0 < true_thin.sum() < true_thin.size
    assert result["pixel_auc_border"]["softmax"] == pytest.approx(roc_auc_score(true_thin, probs), abs=1e-3)
    assert all(0 <= v <= 1 for v in result["pixel_auc_border"].values())


@pytest.mark.slow
def test_budget_ranks_by_lots_when_asked_with_the_runs_lots_settings(setup, tmp_path, monkeypatch):
    """`budget.rankers=[..., lots]`: the evidence pass runs LOTS (the run's `xai=lots` settings,
    here 2 steps) on every predicted cable, and the lots ranker gets its curve and AUCs."""
    from vqi.stages import budget
    from vqi.xai.lots import LOTS

    processed, make = setup
    _write_truth(processed)
    runs = []
    monkeypatch.setattr(LOTS, "maps", lambda self, images, units, real=LOTS.maps: runs.append(self.steps)
                        or real(self, images, units))
    cfg = make("augment.enlarge.k=1", "augment.enlarge.k_max=2", f"budget.output_dir={tmp_path / 'budget'}",
               "budget.budgets=[0,1]", "budget.rankers=[cam,lots]", "budget.thresholds={}", "xai=lots",
               "xai.method.steps=2")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        metrics = budget.run(cfg)
    result = json.loads((tmp_path / "budget" / "budget.json").read_text())
    assert set(result["rankers"]) == {"cam", "lots"} and "aubc/lots" in metrics
    assert set(result["pixel_auc_border"]) == {"cam", "lots"}            # LOTS's border AUC beside the CAM's
    assert result["rankers"]["lots"]["curve"] == pytest.approx(result["rankers"]["cam"]["curve"])  # B = 0 and 1
    assert runs and set(runs) == {2}
