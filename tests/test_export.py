"""Export for deployment: TorchScript + ONNX match PyTorch on the test images; stage=export reports
sizes, CPU latency and the int8 model's IoU change, and logs them to MLflow. ExecuTorch, an optional
extra: tests/test_export_executorch.py."""
from __future__ import annotations

import json
import subprocess
import sys
from cli_factory import cli_env
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mlflow.tracking import MlflowClient
from processed_factory import write_processed
from serve_factory import write_checkpoint

from vqi.data.dataset import SegmentationDataset
from vqi.data.transforms import eval_transform
from vqi.export import checks, formats
from vqi.models.checkpoint import load_model
from vqi.stages import export as export_stage


def test_onnx_and_torchscript_match_pytorch_on_test_images(tmp_path):
    processed = write_processed(tmp_path / "processed", {"test": 3}, size=64)
    data = SegmentationDataset(processed, "test", eval_transform(64))
    images = torch.stack([image for image, _, _ in data])
    model, _ = load_model(write_checkpoint(tmp_path / "best.pt", size=64, images=images))
    example = data[0][0][None]
    onnx_path = formats.export_onnx(model, example, tmp_path / "model.onnx")
    scripted = torch.jit.load(str(formats.export_torchscript(model, example, tmp_path / "model.pt")))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for image, _, _ in data:
        x = image[None]
        with torch.no_grad():
            reference = model(x)["out"].numpy()
            traced = scripted(x).numpy()
        onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert onnx_out.shape == reference.shape == (1, 5, 64, 64)
        assert np.abs(onnx_out - reference).max() <= 1e-4
        assert np.abs(traced - reference).max() <= 1e-4
    x = torch.nn.functional.interpolate(torch.cat([data[1][0][None], data[2][0][None]]), size=(96, 80))
    with torch.no_grad():  # dynamic batch, height and width run (parity proper: the loop above)
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], model(x)["out"].numpy(),
                                   rtol=1e-4, atol=1e-3)
    # the parity check sees a real difference: the int8 model is not bit-identical
    int8 = formats.quantize_onnx(onnx_path, tmp_path / "model.int8.onnx")
    assert int8.stat().st_size < 0.5 * onnx_path.stat().st_size
    batches = [x.numpy()]
    assert checks.parity(checks.torch_runner(model), checks.onnx_runner(str(int8)), batches).max_abs_diff > 1e-4


def test_parity_is_the_worst_logit_difference_and_the_share_of_pixels_with_the_same_class():
    logits = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    changed = logits.copy()
    top = logits[1, :, 2, 3].argmax()
    changed[1, (top + 1) % 3, 2, 3] = logits[1, top, 2, 3] + 0.5  # one of 2 * 4 * 5 pixels changes class
    below = logits[0, :, 0, 0].argmin()
    changed[0, below, 0, 0] -= 0.25  # lowering a losing class changes the logits, not the class
    first, second = logits[:1], logits[1:]  # two batches: both must count
    answer = {id(first): changed[:1], id(second): changed[1:]}
    match = checks.parity(lambda x: x, lambda x: answer[id(x)], [first, second])
    assert match.max_abs_diff == pytest.approx(float(np.abs(changed - logits).max())) and match.max_abs_diff >= 0.5
    assert match.argmax_agreement == pytest.approx(39 / 40)


def test_executorch_format_says_how_to_install_it_when_missing(make_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # as if not installed, with or without the extra
    cfg = make_cfg("export.formats=[onnx,executorch]", stage="export")
    with pytest.raises(ModuleNotFoundError, match=r"ExecuTorch is not installed: pip install -e '\.\[mobile\]'"):
        export_stage.run(cfg)


def test_unknown_format_is_refused(make_cfg):
    cfg = make_cfg("export.formats=[tflite]", stage="export")
    with pytest.raises(ValueError, match="export.formats: unknown"):
        export_stage.run(cfg)


@pytest.mark.slow
def test_export_stage_reports_and_logs(tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 2, "test": 3}, size=64)
    ckpt = write_checkpoint(tmp_path / "ckpt" / "best.pt", size=64)
    out, outputs = tmp_path / "export", tmp_path / "outputs"
    proc = subprocess.run(
        [sys.executable, "-m", "vqi.run", "stage=export", f"paths.output_dir={outputs}",
         f"paths.data_dir={tmp_path / 'data'}", f"data.processed_dir={processed}", "data.image_size=64",
         f"export.checkpoint={ckpt}", f"export.output_dir={out}", "export.quantize=true",
         "export.latency_runs=3", "export.latency_warmup=1", "export.batch_size=2"],
        cwd=tmp_path, env=cli_env(HYDRA_FULL_ERROR="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "export.json").read_text())
    report = doc["results"]
    for name in ("torchscript", "onnx", "onnx_int8"):
        assert report[f"{name}_size_mb"] == pytest.approx(Path(doc["files"][name]).stat().st_size / 2**20)
        assert report[f"{name}_latency_ms"] > 0
    assert report["onnx_max_abs_diff"] <= 1e-4 and report["torchscript_max_abs_diff"] <= 1e-4
    assert report["int8_delta_iou_overall"] == pytest.approx(
        report["int8_iou_overall"] - report["fp32_iou_overall"], nan_ok=True)
    assert "CPU latency onnx" in proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("vqi-demo").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["onnx_max_abs_diff"] <= 1e-4 and run.data.metrics["onnx_latency_ms"] > 0
