"""Model factory (no downloads, weights from cache or file) and checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from torchvision.models import MobileNet_V3_Large_Weights

from vqi.config import CONFIG_DIR
from vqi.models import CheckpointError, WeightsNotFoundError, build_model, load_checkpoint, load_model, save_checkpoint

ARCH = "deeplabv3_mobilenet_v3_large"


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    """torchvision's cache folder pointed at an empty tmp folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def checkpoint_of(model, num_classes=5) -> dict:
    return {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1, "best_score": 0.5,
            "class_names": ["background", "cable", "tower_lattice", "tower_tucohy", "tower_wooden"][:num_classes],
            "model_config": {"arch": ARCH, "num_classes": num_classes, "weights": None,
                             "weights_backbone": None, "aux_loss": False},
            "config": {"train": {"epochs": 1}}, "mlflow_run_id": None}


def test_mobilenet_forward_shape_and_aux_head():
    model = build_model(ARCH, num_classes=5, aux_loss=True).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out["out"].shape == (1, 5, 64, 64) and out["aux"].shape == (1, 5, 64, 64)
    assert "aux" not in build_model(ARCH, num_classes=6).eval()(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name", ["deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                                  "lraspp_mobilenet_v3_large"])
def test_config_files_build_their_model_and_name_a_real_target_layer(name):
    conf = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())
    model = build_model(conf["arch"], num_classes=5, weights=conf["weights"],
                        weights_backbone=conf["weights_backbone"], aux_loss=conf["aux_loss"],
                        output_stride=conf["output_stride"])
    layer = model.get_submodule(conf["target_layer"])
    blocks = list(model.backbone.children())
    # a late backbone block: the last for the ResNets (layer4), MobileNetV3's last inverted residual
    assert any(layer is block for block in blocks[-2:])


def test_mobilenet_at_output_stride_8_has_four_times_the_logits_and_the_same_weights():
    native = build_model(ARCH, num_classes=5).eval()
    dilated = build_model(ARCH, num_classes=5, output_stride=8).eval()
    x = torch.randn(1, 3, 96, 96)
    assert native.backbone(x)["out"].shape[-2:] == (6, 6)
    assert dilated.backbone(x)["out"].shape[-2:] == (12, 12)
    assert dilated(x)["out"].shape == (1, 5, 96, 96)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(native) == shapes(dilated)  # pretrained MobileNetV3 weights still load
    dilated.load_state_dict(native.state_dict())
    with pytest.raises(ValueError, match="output_stride=16 is not available for deeplabv3_resnet50"):
        build_model("deeplabv3_resnet50", num_classes=5, output_stride=16)


def test_lraspp_has_full_size_logits_no_aux_head_and_loads_mobilenet_backbone_weights(empty_torch_home):
    x = torch.randn(1, 3, 96, 96)
    native = build_model("lraspp_mobilenet_v3_large", num_classes=5).eval()
    assert native(x)["out"].shape == (1, 5, 96, 96)
    assert native.backbone(x)["high"].shape[-2:] == (6, 6) and native.backbone(x)["low"].shape[-2:] == (12, 12)
    dilated = build_model("lraspp_mobilenet_v3_large", num_classes=5, output_stride=8).eval()
    assert dilated.backbone(x)["high"].shape[-2:] == (12, 12)
    with pytest.raises(ValueError, match="has no aux head"):
        build_model("lraspp_mobilenet_v3_large", num_classes=5, aux_loss=True)
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    empty_torch_home.mkdir(parents=True)
    torch.save(classifier.state_dict(), empty_torch_home / Path(MobileNet_V3_Large_Weights.IMAGENET1K_V1.url).name)
    model = build_model("lraspp_mobilenet_v3_large", weights_backbone="IMAGENET1K_V1")
    assert torch.equal(model.backbone["15"].block[0][0].weight, classifier.features[15].block[0][0].weight)


def test_checkpoint_remembers_the_output_stride(tmp_path):
    model = build_model(ARCH, num_classes=5, output_stride=8).eval()
    ckpt = checkpoint_of(model)
    ckpt["model_config"]["output_stride"] = 8
    save_checkpoint(ckpt, tmp_path / "os8.pt")
    loaded, _ = load_model(tmp_path / "os8.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], model(x)["out"])


def test_named_weights_missing_from_cache_say_what_to_fetch_and_where(empty_torch_home):
    with pytest.raises(WeightsNotFoundError) as err:
        build_model("deeplabv3_resnet101", weights="COCO_WITH_VOC_LABELS_V1")
    msg = str(err.value)
    assert "https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth" in msg
    assert str(empty_torch_home / "deeplabv3_resnet101_coco-586e9e4e.pth") in msg
    with pytest.raises(WeightsNotFoundError, match="mobilenet_v3_large-"):
        build_model(ARCH, weights_backbone="MobileNet_V3_Large_Weights.IMAGENET1K_V1")


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="COCO_WITH_VOC_LABELS_V1"):
        build_model(ARCH, weights="NOT_A_NAME")


def test_named_backbone_weights_are_read_from_torchvision_cache(empty_torch_home):
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    url = MobileNet_V3_Large_Weights.IMAGENET1K_V1.url
    empty_torch_home.mkdir(parents=True)
    torch.save(classifier.state_dict(), empty_torch_home / Path(url).name)
    model = build_model(ARCH, weights_backbone="IMAGENET1K_V1")
    assert torch.equal(model.backbone["16"][0].weight, classifier.features[16][0].weight)


def test_local_whole_model_file_reinitialises_a_head_of_another_class_count(tmp_path):
    source = build_model(ARCH, num_classes=21, aux_loss=True)
    torch.save(source.state_dict(), tmp_path / "coco.pth")
    model = build_model(ARCH, num_classes=5, weights=str(tmp_path / "coco.pth"))
    assert torch.equal(model.backbone["0"][0].weight, source.backbone["0"][0].weight)
    assert model.classifier[-1].weight.shape[0] == 5
    # one of our checkpoints works as `weights` too (fine-tuning from a trained model)
    save_checkpoint(checkpoint_of(model), tmp_path / "ours.pt")
    again = build_model(ARCH, num_classes=5, weights=str(tmp_path / "ours.pt"))
    assert torch.equal(again.classifier[-1].weight, model.classifier[-1].weight)


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(ARCH, weights=str(tmp_path / "nope.pth"))


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=5).eval()
    path = tmp_path / "ck" / "best.pt"
    save_checkpoint(checkpoint_of(model), path)
    assert not list(path.parent.glob(".*tmp*"))  # no temp file left behind
    loaded, ckpt = load_model(path, "cpu")
    assert not loaded.training and ckpt["epoch"] == 1
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], model(x)["out"])


def test_corrupt_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt.*cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(checkpoint_of(build_model(ARCH, num_classes=5)), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt lacks the field.*epoch"):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_checkpoint_whose_weights_do_not_fit_its_model_config_is_an_error(tmp_path):
    ckpt = checkpoint_of(build_model(ARCH, num_classes=5))
    ckpt["model_config"] = {**ckpt["model_config"], "arch": "deeplabv3_resnet50"}
    save_checkpoint(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: field `model` does not fit"):
        load_model(tmp_path / "mismatch.pt")
    ckpt = checkpoint_of(build_model(ARCH, num_classes=5))
    ckpt["class_names"] = ckpt["class_names"][:3]
    save_checkpoint(ckpt, tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match="3 class_names"):
        load_model(tmp_path / "names.pt")


class _Hostile:
    def __reduce__(self):
        return (print, ("code from a weights file ran",))


@pytest.mark.parametrize("content", ["hostile", "truncated", "junk", "list"])
def test_bad_weights_file_names_the_field_and_the_file(tmp_path, content, capsys):
    path = tmp_path / f"{content}.pt"
    if content == "hostile":
        torch.save({"model": _Hostile()}, path)
    elif content == "truncated":
        torch.save(build_model(ARCH, num_classes=5).state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "list":
        torch.save([1, 2], path)
    else:
        path.write_bytes(b"not weights")
    with pytest.raises(ValueError, match=f"model.weights: {path}") as err:
        build_model(ARCH, num_classes=5, weights=str(path))
    assert "weights_only" not in str(err.value) and err.value.__cause__ is None
    assert "ran" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=f"checkpoint: {path} cannot be read|lacks|holds a list"):
        load_checkpoint(path)
