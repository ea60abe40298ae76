"""Dataset, transforms, the training loop, and the train/test stages on a tiny prepared folder."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from cli_factory import cli_env
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from torch.utils.data import DataLoader

from processed_factory import write_processed
from vqi import tracking
from vqi.data.dataset import SegmentationDataset, class_names
from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from vqi.engine.train_loop import set_bn_momentum, train_one_epoch
from vqi.models import build_model, load_checkpoint, load_model
from vqi.models.losses import DiceLoss
from vqi.stages import test as test_stage
from vqi.stages import train as train_stage

SMALL = ["model=deeplabv3_mobilenet_v3_large", "data.image_size=64", "train.batch_size=4",
         "train.num_workers=0", "train.progress=false", "test.overlays=2",
         "tracking.register_models=false"]  # registering: tests/test_model_registry.py


@pytest.fixture
def processed(tmp_path) -> Path:
    return write_processed(tmp_path / "processed", {"train": 8, "val": 4, "test": 4}, size=64)


@pytest.fixture
def tracked(tmp_path):
    """Run a stage inside a real MLflow run (SQLite in tmp), as vqi.run does."""
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    experiment_id = tracking.configure(uri, "tests")

    def _run(module, cfg, run_id: str | None = None):
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id) as run:
            metrics = module.run(cfg)
        return metrics, run.info.run_id

    _run.client = MlflowClient(uri)
    return _run


def test_dataset_reads_a_prepared_split(processed):
    assert class_names(processed, "train") == ["background", "cable", "tower_lattice",
                                               "tower_tucohy", "tower_wooden"]
    ds = SegmentationDataset(processed, "val", eval_transform(64))
    image, mask, stem = ds[1]
    assert len(ds) == 4 and stem == "val_001"
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.dtype == torch.long and set(mask.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    raw = np.array(Image.open(processed / "masks" / "val" / "val_001.png"))
    assert np.array_equal(mask.numpy(), raw)


def test_missing_split_and_missing_files_are_named(processed):
    with pytest.raises(FileNotFoundError, match="val2.json does not exist.*splits found: test, train, val"):
        SegmentationDataset(processed, "val2")
    (processed / "masks" / "test" / "test_002.png").unlink()
    with pytest.raises(FileNotFoundError, match="test_002.png"):
        SegmentationDataset(processed, "test")


def test_train_transform_moves_image_and_mask_together_and_pads_with_ignore():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = 255                     # left half white
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 1                        # left half cable
    out = train_transform(64, scale=(0.5, 0.5), hflip=1.0, color_p=0.0, seed=0)(image=image, mask=mask)
    img, m = out["image"], out["mask"]
    assert img.shape == (3, 64, 64) and m.shape == (64, 64)
    assert (m == 255).sum() > 0             # the shrunk image was padded, the padding ignored
    white = img[0] > 1.5                    # normalised white
    assert torch.equal(white, torch.as_tensor(np.asarray(m) == 1))
    assert white[:, 40:].any() and not white[:, :16].any()  # flipped: cable on the right


def test_training_lowers_the_dice_loss(processed):
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=5)
    loader = DataLoader(SegmentationDataset(processed, "train", eval_transform(64)), batch_size=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = [train_one_epoch(model, DiceLoss(), optimizer, loader, torch.device("cpu"), progress=False)["loss"]
              for _ in range(5)]
    assert losses[-1] < losses[0] - 0.02, losses


def test_accumulation_steps_the_optimizer_every_n_batches(processed):
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=5)
    loader = DataLoader(SegmentationDataset(processed, "train", eval_transform(64)), batch_size=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    stats = train_one_epoch(model, DiceLoss(), optimizer, loader, torch.device("cpu"), accumulate=3, progress=False)
    assert stats["steps"] == 2  # 4 batches: a step after batch 3, and one for the remainder


def test_the_epoch_loss_is_the_mean_of_the_batch_losses_and_a_nan_is_refused(processed):
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=5)
    loader = DataLoader(SegmentationDataset(processed, "train", eval_transform(64)), batch_size=2)
    seen: list[float] = []

    def recording(logits, masks):
        loss = DiceLoss()(logits, masks)
        seen.append(loss.item())
        return loss

    stats = train_one_epoch(model, recording, torch.optim.SGD(model.parameters(), lr=0.0), loader,
                            torch.device("cpu"), progress=False)
    assert len(seen) == 4 and stats["loss"] == sum(seen) / len(seen)

    def poisoned(logits, masks):
        return DiceLoss()(logits, masks) * math.nan

    with pytest.raises(FloatingPointError, match="lower train.lr"):
        train_one_epoch(model, poisoned, torch.optim.SGD(model.parameters(), lr=0.0), loader,
                        torch.device("cpu"), epoch=2, progress=False)


def test_bn_momentum_override_reaches_every_batchnorm():
    model = build_model("deeplabv3_mobilenet_v3_large", num_classes=5)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {m.momentum for m in bns} == {0.01, 0.1}  # torchvision's MobileNetV3 backbone: 0.01
    assert set_bn_momentum(model, 0.2) == len(bns) and {m.momentum for m in bns} == {0.2}


def independent_test_iou(model, processed: Path, split: str, masks: str = "masks") -> list[float]:
    """Per-class IoU over the split, computed apart from the stage: own image loading and
    normalisation, predictions one image at a time, pixel counts with boolean masks
    (`masks="masks_truth"`: against the true masks, distractors (5) as background)."""
    doc = json.loads((processed / "annotations" / f"{split}.json").read_text())
    inter, union = np.zeros(5), np.zeros(5)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    for img in doc["images"]:
        rgb = np.asarray(Image.open(processed / "images" / img["file_name"]).convert("RGB")) / 255.0
        x = torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1)).float()[None]
        with torch.no_grad():
            pred = model(x)["out"][0].argmax(0).numpy()
        pred[pred == 5] = 0
        gt = np.array(Image.open(processed / masks / split / f"{Path(img['file_name']).stem}.png"))
        gt[gt == 5] = 0
        valid = gt != 255
        for c in range(5):
            inter[c] += ((gt == c) & (pred == c) & valid).sum()
            union[c] += (((gt == c) | (pred == c)) & valid).sum()
    return [i / u if u else math.nan for i, u in zip(inter, union)]


def test_train_then_test_stage(make_cfg, processed, tracked, tmp_path):
    cfg = make_cfg(*SMALL, f"data.processed_dir={processed}", "train.epochs=2", stage="train")
    metrics, run_id = tracked(train_stage, cfg)
    ckpt_dir = Path(cfg.train.checkpoint_dir)
    assert ckpt_dir == tmp_path / "outputs" / "checkpoints" / "demo" / "baseline"
    ckpt = load_checkpoint(ckpt_dir / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "best_score", "class_names", "model_config",
            "config", "mlflow_run_id"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["mlflow_run_id"] == run_id
    assert ckpt["class_names"][1] == "cable" and ckpt["model_config"]["num_classes"] == 5
    history = tracked.client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.step for m in tracked.client.get_metric_history(run_id, "val_iou_overall")] == [0, 1, 2]
    artifacts = {a.path for a in tracked.client.list_artifacts(run_id)}
    assert "model" in artifacts and "checkpoints" not in artifacts  # the model once, no optimizer state
    assert {a.path for a in tracked.client.list_artifacts(run_id, "model")} == {"model/best.pt"}
    assert tracked.client.get_run(run_id).data.tags["model_artifact"] == "model/best.pt"
    assert {a.path for a in tracked.client.list_artifacts(run_id, "figures")} == {"figures/training_curves.png"}
    assert (ckpt_dir / "training_curves.png").is_file()
    best = load_checkpoint(ckpt_dir / "best.pt")
    assert "optimizer" not in best and "scheduler" not in best
    assert (ckpt_dir / "best.pt").stat().st_size < 0.6 * (ckpt_dir / "last.pt").stat().st_size

    # the test stage: IoU equal to an independent computation on the same model's predictions
    cfg_test = make_cfg(*SMALL, f"data.processed_dir={processed}", "train.epochs=2", stage="test")
    result, test_run = tracked(test_stage, cfg_test)
    model, _ = load_model(ckpt_dir / "best.pt")
    want = independent_test_iou(model, processed, "test")
    names = ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"]
    got = [result[f"iou_{n}"] for n in names]
    assert np.allclose(got, want, equal_nan=True, atol=1e-9), (got, want)
    fg = [v for v in want[1:] if not math.isnan(v)]
    assert result["iou_overall"] == pytest.approx(sum(fg) / len(fg))
    assert result["iou_background"] == pytest.approx(want[0])
    out_dir = Path(cfg_test.test.output_dir)
    assert json.loads((out_dir / "metrics.json").read_text())["metrics"]["iou_cable"] == pytest.approx(want[1])
    assert (out_dir / "confusion.png").is_file() and len(list((out_dir / "overlays").glob("*.png"))) == 2
    logged = {a.path for a in tracked.client.list_artifacts(test_run, "test")}
    assert {"test/metrics.json", "test/confusion.png", "test/overlays"} <= logged


def write_truth(processed: Path, split: str) -> None:
    """True masks for a split: cables one pixel wider than annotated, a distractor (5) stripe."""
    for path in (processed / "masks" / split).glob("*.png"):
        label = np.array(Image.open(path))
        truth = label.copy()
        wider = np.zeros_like(label, bool)
        wider[:, 1:] |= label[:, :-1] == 1
        wider[1:, :] |= label[:-1, :] == 1
        truth[wider & (label == 0)] = 1
        truth[5:7, 10:50][truth[5:7, 10:50] == 0] = 5
        (processed / "masks_truth" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(truth).save(processed / "masks_truth" / split / path.name)


def test_test_stage_scores_against_truth_beside_annotation(make_cfg, processed, tracked):
    write_truth(processed, "test")
    base = [*SMALL, f"data.processed_dir={processed}", "train.epochs=1", "train.eval_untrained=false"]
    tracked(train_stage, make_cfg(*base, stage="train"))
    cfg = make_cfg(*base, stage="test")
    result, _ = tracked(test_stage, cfg)
    model, _ = load_model(Path(cfg.test.checkpoint))
    names = ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"]
    for prefix, masks in (("", "masks"), ("truth/", "masks_truth")):
        want = independent_test_iou(model, processed, "test", masks)
        got = [result[f"{prefix}iou_{n}"] for n in names]
        assert np.allclose(got, want, equal_nan=True, atol=1e-9), (prefix, got, want)
    saved = json.loads((Path(cfg.test.output_dir) / "metrics.json").read_text())
    assert saved["truth_confusion_matrix"] is not None and "truth/iou_overall" in saved["metrics"]


def test_training_on_truth_reads_the_true_masks_with_distractors_as_background(make_cfg, processed, tracked):
    write_truth(processed, "train")
    write_truth(processed, "val")
    ds = SegmentationDataset(processed, "train", None, labels="truth")
    raw = np.array(Image.open(processed / "masks_truth" / "train" / "train_000.png"))
    _, mask, _ = ds[0]
    assert (raw == 5).any() and np.array_equal(mask.numpy(), np.where(raw == 5, 0, raw))
    with pytest.raises(ValueError, match="labels: expected one of annotated, truth"):
        SegmentationDataset(processed, "train", None, labels="guess")
    cfg = make_cfg(*SMALL, f"data.processed_dir={processed}", "train.epochs=1", "train.labels=truth",
                   "train.tag=truth", stage="train")
    metrics, _ = tracked(train_stage, cfg)
    assert load_checkpoint(Path(cfg.train.checkpoint_dir) / "last.pt")["config"]["train"]["labels"] == "truth"


def test_rerun_reuses_a_finished_training_and_refuses_another_config(make_cfg, processed, tracked):
    base = [*SMALL, f"data.processed_dir={processed}", "train.epochs=1", "train.eval_untrained=false"]
    tracked(train_stage, make_cfg(*base, stage="train"))
    last = Path(make_cfg(*base, stage="train").train.checkpoint_dir) / "last.pt"
    stamp = last.stat().st_mtime_ns
    metrics, _ = tracked(train_stage, make_cfg(*base, stage="train"))
    assert last.stat().st_mtime_ns == stamp and "final_val_iou_overall" in metrics  # reused, not retrained
    tracked(train_stage, make_cfg(*base, "model.target_layer=backbone.15", stage="train"))
    assert last.stat().st_mtime_ns == stamp  # the CAM layer is no part of what is trained

    other = make_cfg(*base, "train.lr=0.5", stage="train")
    assert train_stage.resume_run_id(other) is None
    with pytest.raises(train_stage.CheckpointConfigError, match=r"train\.lr: .* -> 0\.5.*train\.force=true"):
        tracked(train_stage, other)
    assert last.stat().st_mtime_ns == stamp  # nothing overwritten
    tracked(train_stage, make_cfg(*base, "train.lr=0.5", "train.force=true", stage="train"))
    assert load_checkpoint(last)["config"]["train"]["lr"] == 0.5


def test_an_unfinished_training_continues_its_epochs_and_mlflow_run(make_cfg, processed, tracked, monkeypatch):
    base = [*SMALL, f"data.processed_dir={processed}", "train.epochs=2", "train.eval_untrained=false"]
    _, first_run = tracked(train_stage, make_cfg(*base, "train.stop_after_epochs=1", stage="train"))
    cfg = make_cfg(*base, stage="train")
    assert load_checkpoint(Path(cfg.train.checkpoint_dir) / "last.pt")["epoch"] == 1
    reads = []   # resume_run_id and the run it resumes read last.pt once, as vqi.run calls them
    monkeypatch.setattr(train_stage, "load_checkpoint", lambda path: reads.append(path) or load_checkpoint(path))
    assert train_stage.resume_run_id(cfg) == first_run
    _, again = tracked(train_stage, cfg, run_id=train_stage.resume_run_id(cfg))
    assert len(reads) == 1
    assert again == first_run
    assert load_checkpoint(Path(cfg.train.checkpoint_dir) / "last.pt")["epoch"] == 2
    assert [m.step for m in tracked.client.get_metric_history(first_run, "train_loss")] == [1, 2]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_continues(tmp_path, tmp_paths):
    """A real interruption: SIGKILL the CLI during an epoch, start it again with the same command."""
    processed = write_processed(tmp_path / "processed", {"train": 24, "val": 4, "test": 4}, size=96)
    args = [sys.executable, "-m", "vqi.run", "stage=train", *SMALL, "data.image_size=96",
            f"data.processed_dir={processed}", "train.epochs=4", "train.eval_untrained=false", *tmp_paths]
    env = cli_env()
    last = tmp_path / "outputs" / "checkpoints" / "demo" / "baseline" / "last.pt"
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.is_file(), "no checkpoint before the deadline"
    time.sleep(1.0)  # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)
    assert 1 <= killed_at["epoch"] < 4, "the run ended before it could be killed; use more data"

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"at epoch {killed_at['epoch']}/4" in done.stderr + done.stdout
    final = load_checkpoint(last)
    assert final["epoch"] == 4 and final["mlflow_run_id"] == killed_at["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(final["mlflow_run_id"], "train_loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert client.get_run(final["mlflow_run_id"]).info.status == "FINISHED"
    assert "best.pt" in {Path(a.path).name for a in client.list_artifacts(final["mlflow_run_id"], "model")}
