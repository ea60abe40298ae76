"""IMPACTX (docs/metrics.md, "IMPACTX"): the explanation branch on real torchvision models (random
weights), its loss, a training through the train stage on the teacher's maps, `xai=impactx` on a
known answer, and the study's `impactx` arm."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from processed_factory import write_processed
from vqi import tracking
from vqi.config import compose_config
from vqi.data.dataset import SegmentationDataset
from vqi.xai.teacher_maps import TeacherMapsDataset
from vqi.data.transforms import eval_transform, train_transform
from vqi.engine.train_loop import batch_loss, set_bn_momentum, train_one_epoch
from vqi.models import build_model, load_checkpoint, load_model, save_checkpoint
from vqi.models.impactx import ImpactX, last_features
from vqi.models.losses import DiceLoss, reconstruction_loss
from vqi.stages import evaluate, explain, retrain, train as train_stage
from vqi.config import build_cam
from vqi.study.arm_study import load_arm, retrain_overrides
from vqi.utils.seed import seed_everything
from vqi.xai.base import resolve_layer
from vqi.xai.hirescam import HiResCAM
from vqi.xai.maps import file_hash, load_maps, read_meta, save_maps
from vqi.xai.targets import Unit, model_logits

LRASPP = "lraspp_mobilenet_v3_large"
NAMES = ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"]


def calibrated(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """`model` in eval mode with BatchNorm statistics of `images` (one pass at momentum 1): a
    random-weight MobileNetV3's eval-mode features are ~1e-9 with the initial statistics."""
    set_bn_momentum(model, 1.0)
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


@pytest.mark.parametrize("arch", [LRASPP, "deeplabv3_mobilenet_v3_large"])
def test_the_branch_draws_a_map_per_foreground_class_and_its_encoding_joins_the_logits(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5, explanation_channels=8).eval()
    plain = model.segmenter                                      # the torchvision model it wraps
    assert type(plain).__name__ in ("DeepLabV3", "LRASPP")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out["out"].shape == (2, 5, 32, 32) and out["explanation"].shape == (2, 4, 32, 32)
        assert 0 < float(out["explanation"].min()) and float(out["explanation"].max()) < 1
        torch.testing.assert_close(out["out"], plain(x)["out"])      # C starts as [identity, 0]
        torch.testing.assert_close(model_logits(model, x), out["out"])
        assert resolve_layer(model, "backbone.15") is plain.backbone.get_submodule("15")

        model.join_encoding.weight.normal_()
        z = model.encoder(last_features(plain.backbone(x)))
        joined = F.interpolate(F.conv2d(z, model.join_encoding.weight), size=(32, 32), mode="bilinear",
                               align_corners=False)
        torch.testing.assert_close(model(x)["out"], plain(x)["out"] + joined)
        assert joined.abs().max() > 1e-3

    config = {"arch": arch, "num_classes": 5, "explanation_channels": 8}
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "class_names": NAMES, "model_config": config},
                    tmp_path / "impactx.pt")
    loaded, _ = load_model(tmp_path / "impactx.pt")
    assert isinstance(loaded, ImpactX)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["explanation"], model(x)["explanation"])


def test_the_loss_is_the_segmentation_loss_plus_lambda_times_the_mse_where_the_teacher_has_maps():
    g = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(2, 5, 8, 8, generator=g), torch.randn(2, 5, 8, 8, generator=g)
    masks = torch.randint(0, 5, (2, 8, 8), generator=g)
    masks[0, 0, :3] = 255
    predicted, teacher = torch.rand(2, 4, 8, 8, generator=g), torch.rand(2, 4, 8, 8, generator=g)
    teacher[0, 1] = math.nan                 # a class image 0 has no map of
    teacher[1, :, :2] = math.nan             # rows the crop padded
    p, t = predicted.double().numpy(), teacher.double().numpy()
    mse = np.mean([(p[i] - t[i]) ** 2 for i in np.ndindex(*t.shape) if not np.isnan(t[i])])
    seg = DiceLoss()(logits, masks).item() + 0.5 * DiceLoss()(aux, masks).item()

    total, recon = batch_loss({"out": logits, "aux": aux, "explanation": predicted}, masks, DiceLoss(),
                              aux_weight=0.5, teacher=teacher, explanation_weight=0.7)
    assert recon.item() == pytest.approx(mse, rel=1e-6)
    assert total.item() == pytest.approx(seg + 0.7 * mse, rel=1e-6)
    assert reconstruction_loss(predicted, torch.full_like(teacher, math.nan)).item() == 0.0
    with pytest.raises(ValueError, match="differ"):
        reconstruction_loss(predicted, teacher[:, :3])


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_lambda_zero_trains_the_segmentation_alone_and_leaves_the_decoder_untouched(weight):
    torch.manual_seed(0)
    model = build_model(LRASPP, num_classes=5, explanation_channels=8)
    x, masks = torch.randn(2, 3, 48, 48), torch.randint(0, 5, (2, 48, 48))
    teacher = torch.rand(2, 4, 48, 48)
    before = copy.deepcopy(model)
    out = before.train()(x)
    seg, recon = DiceLoss()(out["out"], masks).item(), reconstruction_loss(out["explanation"], teacher).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    stats = train_one_epoch(model, DiceLoss(), optimizer, [(x, masks, ["a", "b"], teacher)], torch.device("cpu"),
                            progress=False, explanation_weight=weight)
    assert stats["loss"] == pytest.approx(seg + weight * recon, rel=1e-5)
    assert stats["reconstruction"] == pytest.approx(recon, rel=1e-5)

    def moved(prefix: str) -> bool:
        old = dict(before.named_parameters())
        return any(not torch.equal(old[name], p) for name, p in model.named_parameters() if name.startswith(prefix))

    assert moved("segmenter.classifier") and moved("join_encoding")
    assert moved("decoder") == (weight > 0)


def test_xai_impactx_draws_the_map_the_branch_learnt_for_each_class(make_cfg):
    """Known answer: the branch fitted on one image whose teacher maps are a square per class (class 2
    top left, class 4 bottom right, each 14% of the image) explains each class by its own square.
    Fitted in eval mode, BatchNorm statistics fixed from the image, so the fit is the map's alone."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    model = calibrated(build_model(LRASPP, num_classes=5, explanation_channels=8), x)
    squares = {2: (slice(8, 32), slice(8, 32)), 4: (slice(32, 56), slice(32, 56))}
    teacher = torch.full((1, 4, 64, 64), math.nan)
    for c, (rows, cols) in squares.items():
        teacher[0, c - 1] = 0.0
        teacher[0, c - 1, rows, cols] = 1.0
    for p in model.segmenter.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=3e-3)
    for _ in range(60):   # seeds 0-4 put 0.92-0.94 of each map's mass in its square
        loss = reconstruction_loss(model(x)["explanation"], teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    cfg = make_cfg(f"model={LRASPP}", "xai=impactx", "xai.checkpoint=/runs/impactx/best.pt")
    cam = build_cam(cfg, model)
    anywhere = torch.ones(64, 64, dtype=torch.bool)
    maps = cam(x, [Unit(0, 2, anywhere), Unit(0, 4, anywhere)])
    assert maps.shape == (2, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) == pytest.approx(1.0)
    for m, (rows, cols) in zip(maps, squares.values()):
        inside = float(m[rows, cols].sum() / m.sum())
        assert inside > 0.8, inside                                   # 0.14 if the map ignored the square
        peak = divmod(int(m.argmax()), 64)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop

    with pytest.raises(ValueError, match="/runs/impactx/best.pt holds a LRASPP without an explanation branch"):
        build_cam(cfg, build_model(LRASPP, num_classes=5))


def test_the_teachers_maps_move_with_the_image_and_mark_what_has_no_target(tmp_path):
    """Maps written as each class's annotated mask must come out of the training transform equal to
    the transformed mask's classes; NaN for classes without a map and for the padding."""
    processed = write_processed(tmp_path / "processed", {"train": 2}, size=48)
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    for path in (processed / "masks" / "train").glob("*.png"):
        raw = np.array(Image.open(path))
        save_maps(maps_dir / f"{path.stem}.npz", {NAMES[c]: (raw == c).astype(np.float32) for c in (1, 2)})
    flipped_and_shrunk = train_transform(48, scale=(0.5, 0.5), hflip=1.0, color_p=0.0, seed=0)
    dataset = TeacherMapsDataset(processed, "train", flipped_and_shrunk, maps_dir, NAMES)
    for _, mask, stem, teacher in dataset:
        assert teacher.shape == (4, 48, 48) and teacher.dtype == torch.float32
        padded = torch.isnan(teacher[0])
        assert padded.any() and (mask[padded] == 255).all()           # the crop padded the shrunk image
        for c in (1, 2):
            torch.testing.assert_close(teacher[c - 1][~padded], (mask[~padded] == c).float())
            assert torch.equal(torch.isnan(teacher[c - 1]), padded)
        assert torch.isnan(teacher[2:]).all()                         # classes 3 and 4 have no map
    (maps_dir / "train_001.npz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks the maps of 1 image.*train_001.npz"):
        TeacherMapsDataset(processed, "train", None, maps_dir, NAMES)


@pytest.fixture
def tracked(tmp_path):
    """Run a stage inside a real MLflow run (SQLite in tmp), as vqi.run does."""
    experiment_id = tracking.configure(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}", "tests")

    def _run(module, cfg):
        with mlflow.start_run(experiment_id=experiment_id):
            return module.run(cfg)

    return _run


def teacher_checkpoint(path: Path, processed: Path) -> Path:
    """A random-weight LR-ASPP with BatchNorm statistics of the training images: the baseline that teaches."""
    torch.manual_seed(1)
    images = torch.stack([item[0] for item in SegmentationDataset(processed, "train", eval_transform(48))])
    model = calibrated(build_model(LRASPP, num_classes=5), images)
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "best_score": 0.0, "class_names": NAMES,
                     "model_config": {"arch": LRASPP, "num_classes": 5}, "config": {}}, path)
    return path


def impactx_overrides(processed: Path, teacher: Path) -> list[str]:
    return [f"model={LRASPP}", f"data.processed_dir={processed}", "data.image_size=48", "train.batch_size=2",
            "train.num_workers=0", "train.progress=false", "train.eval_untrained=false", "train.epochs=3",
            "train.lr=0.01", "train.bn_momentum=0.3", "train.impactx.enabled=true", "train.impactx.teacher=hirescam",
            f"train.impactx.teacher_checkpoint={teacher}", "train.impactx.channels=8", "train.tag=impactx"]


@pytest.mark.slow
def test_impactx_training_learns_the_teachers_maps_resumes_and_records_its_teacher(make_cfg, tracked, tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 4, "val": 2, "test": 2}, size=48)
    teacher = teacher_checkpoint(tmp_path / "baseline" / "best.pt", processed)
    base = impactx_overrides(processed, teacher)
    cfg = make_cfg(*base, stage="train")
    tracked(train_stage, make_cfg(*base, "train.stop_after_epochs=1", stage="train"))

    # the teacher's maps: HiResCAM of the baseline for every annotated class, T_c = the annotated mask
    maps_dir = Path(cfg.train.impactx.maps_dir) / "hirescam"
    meta = read_meta(maps_dir)
    assert meta["target"] == "annotated" and meta["source"]["split"] == "train" and len(meta["images"]) == 4
    teacher_model, _ = load_model(teacher)
    dataset = SegmentationDataset(processed, "train", eval_transform(48))
    for image, mask, stem in dataset:
        raw = np.array(Image.open(processed / "masks" / "train" / f"{stem}.png"))
        annotated = [NAMES[c] for c in range(1, 5) if (raw == c).any()]
        maps = load_maps(maps_dir / f"{stem}.npz")
        assert sorted(maps) == sorted(annotated)
        units = [Unit(0, NAMES.index(n), mask == NAMES.index(n)) for n in annotated]
        want = HiResCAM(teacher_model, "backbone.15")(image[None], units).numpy()
        np.testing.assert_allclose(np.stack([maps[n] for n in annotated]), want, atol=1e-6)
    assert any(float(m.max()) == pytest.approx(1.0) for m in maps.values())   # not a blank teacher

    # resumed: the maps reused, the epochs continued, the teacher recorded
    stamp = (maps_dir / "explain.json").stat().st_mtime_ns
    assert train_stage.checkpoint_state(cfg)[0] == "resume"
    tracked(train_stage, cfg)
    assert (maps_dir / "explain.json").stat().st_mtime_ns == stamp
    last = Path(cfg.train.checkpoint_dir) / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 3 and ckpt["model_config"]["explanation_channels"] == 8
    assert ckpt["config"]["train"]["impactx"]["weight"] == 1.0
    assert ckpt["dataset_fingerprint"].endswith(f"teacher hirescam@{read_meta(maps_dir)['checkpoint_hash']}")
    assert "train_reconstruction" in ckpt["metrics"]

    # the reconstruction loss on a fixed batch (the training images, uncropped) fell from the initial
    # model's (0.160 -> 0.125 when written); BatchNorm on the batch's statistics, as in training: after
    # 6 steps from random weights the running statistics are not yet usable (eval mode: 0.175 -> 0.167)
    fixed = TeacherMapsDataset(processed, "train", eval_transform(48), maps_dir, NAMES)
    images, teachers = torch.stack([it[0] for it in fixed]), torch.stack([it[3] for it in fixed])
    seed_everything(int(cfg.seed))
    initial = build_model(**ckpt["model_config"])
    trained, _ = load_model(last)
    with torch.no_grad():
        before, after = (reconstruction_loss(m.train()(images)["explanation"], teachers).item()
                         for m in (initial, trained))
    assert after < 0.9 * before, (before, after)

    # finished: reused; another lambda or teacher is another training
    stamp = last.stat().st_mtime_ns
    tracked(train_stage, cfg)
    assert last.stat().st_mtime_ns == stamp
    with pytest.raises(train_stage.CheckpointConfigError, match=r"train\.impactx\.weight: 1\.0 -> 0\.5"):
        train_stage.checkpoint_state(make_cfg(*base, "train.impactx.weight=0.5", stage="train"))
    with pytest.raises(train_stage.CheckpointConfigError, match="dataset_fingerprint: .*teacher hirescam.* -> .*teacher gradcam"):
        train_stage.checkpoint_state(make_cfg(*base, "train.impactx.teacher=gradcam", stage="train"))

    # a Table I row: stage=explain and stage=evaluate with xai=impactx on the trained model
    best = Path(cfg.train.checkpoint_dir) / "best.pt"
    explained = [*base, "xai=impactx", f"xai.checkpoint={best}", "xai.target=gt", "xai.figures=0", "xai.progress=false"]
    out = tracked(explain, make_cfg(*explained, stage="explain"))
    method_dir = Path(make_cfg(*explained, stage="explain").xai.maps_dir) / "impactx"
    assert read_meta(method_dir)["checkpoint_hash"] == file_hash(best) and out["units"] > 0
    scores = tracked(evaluate, make_cfg(*explained, stage="evaluate"))
    assert scores["units"] == out["units"] and all(np.isfinite(scores[k]) for k in ("ebpg", "iou", "drop", "deletion"))


def test_the_teacher_must_exist_and_must_not_be_the_model_trained(make_cfg, tmp_path):
    base = ["train.impactx.enabled=true"]
    with pytest.raises(train_stage.ImpactXTeacherError, match="baseline/best.pt does not exist"):
        train_stage.impactx_teacher(make_cfg(*base, stage="train"))
    own = tmp_path / "outputs" / "checkpoints" / "demo" / "baseline" / "best.pt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the baseline")                             # only its existence matters here
    with pytest.raises(train_stage.ImpactXTeacherError, match="the model would teach itself"):
        train_stage.impactx_teacher(make_cfg(*base, stage="train"))
    with pytest.raises(train_stage.ImpactXTeacherError, match="chosen_method.json does not exist"):
        train_stage.impactx_teacher(make_cfg(*base, "train.tag=impactx", stage="train"))
    tables = tmp_path / "outputs" / "tables"
    tables.mkdir(parents=True)
    (tables / "chosen_method.json").write_text(json.dumps({"method": "layercam"}))
    assert train_stage.impactx_teacher(make_cfg(*base, "train.tag=impactx", stage="train")) == ("layercam", own)
    with pytest.raises(train_stage.ImpactXTeacherError, match="the teacher is a CAM method of the baseline"):
        train_stage.impactx_teacher(make_cfg(*base, "train.tag=impactx", "train.impactx.teacher=impactx", stage="train"))


def test_a_plain_checkpoint_written_before_impactx_existed_is_still_the_same_training(make_cfg, tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 2}, size=48)
    cfg = make_cfg(f"data.processed_dir={processed}", "train.epochs=1", stage="train")
    config = train_stage._plain_config(cfg)
    del config["train"]["impactx"]
    save_checkpoint({"model": {}, "epoch": 1, "class_names": NAMES, "model_config": {}, "config": config,
                     "dataset_fingerprint": train_stage._fingerprint(cfg)}, Path(cfg.train.checkpoint_dir) / "last.pt")
    assert train_stage.checkpoint_state(cfg)[0] == "done"
    teacher = tmp_path / "baseline.pt"
    teacher.write_bytes(b"a baseline")                           # hashed into the fingerprint, not read
    with pytest.raises(train_stage.CheckpointConfigError, match=r"train\.impactx: None -> "):
        train_stage.checkpoint_state(make_cfg(f"data.processed_dir={processed}", "train.epochs=1",
                                              "train.impactx.enabled=true", "train.impactx.teacher=gradcam",
                                              f"train.impactx.teacher_checkpoint={teacher}", stage="train"))


def test_the_impactx_arm_retrains_on_the_annotation_as_is_with_the_branch(tmp_path):
    arm = load_arm("impactx", {"budget": 0.3})
    assert arm.retrain == "unchanged" and arm.overrides == ("train.impactx.enabled=true",)
    folder = tmp_path / "seed1"
    common = ["seed=1", f"paths.output_dir={folder}", f"paths.data_dir={folder / 'data'}", "experiment=demo"]
    cfg = compose_config(["stage=retrain", *common, *retrain_overrides(arm, folder)])
    enhanced = retrain.enhanced_config(cfg)
    assert enhanced.train.split == "train" and enhanced.train.labels == "annotated" and enhanced.train.impactx.enabled
    assert Path(enhanced.train.checkpoint_dir) == folder / "checkpoints" / "impactx"
    assert Path(enhanced.train.impactx.teacher_checkpoint) == folder / "checkpoints" / "demo" / "baseline" / "best.pt"
    assert Path(enhanced.test.output_dir) == folder / "test" / "impactx"
    assert retrain.inputs(cfg)[1:] == [Path(enhanced.train.impactx.teacher_checkpoint),
                                       folder / "tables" / "chosen_method.json"]


def test_impactx_in_xai_methods_is_a_row_of_tables_i_and_iii_from_its_own_model(run_cli, tmp_path):
    """`make table1` / `make table3` with impactx in the lists: `stage=all` trains IMPACTX's model
    after the report (teacher: the method chosen), explains, evaluates and reports again;
    `stage=sanity` checks it on its own model in a run of its own; its rows come from that model
    and it is never chosen. Real CLI, real store, experiment=debug (T_c = G_c: the tiny model
    predicts no foreground)."""
    common = ["experiment=debug", "xai_methods=[gradcam,impactx]", "xai.figures=0", "xai.target=gt"]
    run_cli("stage=all", "until=report", *common)
    run_cli("stage=sanity", "sanity.methods=[gradcam,impactx]", "sanity.max_images=2", *common)
    run_cli("stage=report", *common)

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vqi-debug").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    steps = [(r.data.tags["stage"], r.data.tags.get("xai_method", "")) for r in runs if r.data.tags["stage"] != "all"]
    assert steps == [("prepare", ""), ("train", ""), ("test", ""), ("explain", "gradcam"), ("evaluate", "gradcam"),
                     ("report", ""), ("train", ""), ("explain", "impactx"), ("evaluate", "impactx"), ("report", ""),
                     ("sanity", ""), ("sanity", ""), ("report", "")]
    checkpoints = tmp_path / "outputs" / "checkpoints" / "debug"
    baseline, own = file_hash(checkpoints / "baseline" / "best.pt"), file_hash(checkpoints / "impactx" / "best.pt")
    evaluated = {r.data.tags["xai_method"]: r.data.tags["checkpoint_hash"] for r in runs if r.data.tags["stage"] == "evaluate"}
    assert evaluated == {"gradcam": baseline, "impactx": own}
    sanity_runs = [r for r in runs if r.data.tags["stage"] == "sanity"]
    assert {(r.data.tags["sanity_methods"], r.data.tags["checkpoint_hash"]) for r in sanity_runs} == {
        ("gradcam", baseline), ("impactx", own)}
    assert sanity_runs[1].data.tags["sanity_steps"].split(",")[0] == "explanation"   # its branch goes first

    tables = tmp_path / "outputs" / "tables"
    assert json.loads((tables / "chosen_method.json").read_text())["method"] == "gradcam"
    assert (tables / "sanity.md").is_file() and (tables / "sanity_impactx.md").is_file()
    for name in ("table1", "table3"):
        text = (tables / f"{name}.md").read_text()
        row = next(line for line in text.splitlines() if line.startswith("| IMPACTX |"))
        assert "–" not in row, f"{name}: IMPACTX's row has empty cells: {row}"
        assert "IMPACTX explains a model of its own" in text and "never chosen" in text
