"""ExecuTorch export (the `mobile` extra): stage=export writes a `.pte` lowered to XNNPACK whose logits,
run in ExecuTorch's own runtime, match PyTorch on the test images. Lowering a MobileNetV3 takes about
a minute on one core, so these tests are slow."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from processed_factory import write_processed
from serve_factory import write_checkpoint

from vqi import tracking
from vqi.data.dataset import SegmentationDataset
from vqi.data.transforms import eval_transform
from vqi.export import checks
from vqi.models.checkpoint import load_model
from vqi.stages import export as export_stage

pytest.importorskip("executorch", reason="ExecuTorch is not installed (pip install -e '.[mobile]')")


@pytest.mark.slow
def test_stage_writes_a_pte_that_matches_pytorch_in_the_executorch_runtime(tmp_path, make_cfg):
    processed = write_processed(tmp_path / "processed", {"test": 3}, size=64)
    data = SegmentationDataset(processed, "test", eval_transform(64))
    images = torch.stack([image for image, _, _ in data])
    ckpt = write_checkpoint(tmp_path / "ckpt" / "best.pt", size=64, images=images)
    out = tmp_path / "export"
    cfg = make_cfg(f"data.processed_dir={processed}", "data.image_size=64", f"export.checkpoint={ckpt}",
                   f"export.output_dir={out}", "export.formats=[executorch]", "export.batch_size=2",
                   "export.latency_runs=3", "export.latency_warmup=1", stage="export")
    with mlflow.start_run(experiment_id=tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)):
        results = export_stage.run(cfg)

    pte = Path(json.loads((out / "export.json").read_text())["files"]["executorch"])
    assert pte == out / "model.pte" and results["executorch_size_mb"] == pytest.approx(pte.stat().st_size / 2**20)
    assert results["executorch_max_abs_diff"] <= 1e-4 and results["executorch_argmax_agreement"] == 1.0
    assert results["executorch_latency_ms"] > 0 and not (out / "model.onnx").exists()
    assert b"XnnpackBackend" in pte.read_bytes()  # lowered to the CPU delegate, not ExecuTorch's portable kernels

    # the program, fixed at batch 1, answers a batch of 3 image by image, as PyTorch does
    model, _ = load_model(ckpt)
    program = checks.executorch_runner(str(pte))
    logits = program(images.numpy())
    with torch.no_grad():
        reference = model(images)["out"].numpy()
    assert logits.shape == reference.shape == (3, 5, 64, 64)
    assert np.abs(logits - reference).max() <= 1e-4 and reference.std() > 0.1
    # and the check sees a real difference: one class's bias moved by 0.01 after export
    with torch.no_grad():
        model.classifier[-1].bias[1] += 0.01
    moved = checks.parity(checks.torch_runner(model), program, [images.numpy()])
    assert moved.max_abs_diff == pytest.approx(0.01, abs=1e-4)
