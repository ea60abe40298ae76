"""The real TTPLA sample (../shared/ttpla-sample, never committed): the CLI prepares it and its
masks agree with an independent pycocotools rasterisation. Skipped when the sample is absent."""
from __future__ import annotations

import json

import numpy as np
import pytest
from cli_factory import cli_env
from mlflow.tracking import MlflowClient
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import SHARED_SAMPLE

pytestmark = pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="../shared/ttpla-sample is absent")

CLASS_IDS = {"cable": 1, "tower_lattice": 2, "tower_tucohy": 3, "tower_wooden": 4}
SIZE = 500


def independent_class_masks(json_path, size=SIZE) -> dict[int, np.ndarray]:
    """Per-class union of pycocotools polygon masks, computed straight from the labelme file."""
    doc = json.loads(json_path.read_text())
    sx, sy = size / doc["imageWidth"], size / doc["imageHeight"]
    out: dict[int, np.ndarray] = {}
    for shape in doc["shapes"]:
        cls = CLASS_IDS.get(shape["label"].lower())
        if cls is None:
            continue
        flat = [v for x, y in shape["points"] for v in (x * sx, y * sy)]
        m = mask_utils.decode(mask_utils.frPyObjects([flat], size, size))[..., 0].astype(bool)
        out[cls] = out.get(cls, np.zeros((size, size), bool)) | m
    return out


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """Run the CLI once, exactly as the acceptance command, with data/outputs in tmp: (tmp, process)."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("ttpla")
    args = ["stage=prepare", "data=ttpla", f"data.labels_dir={SHARED_SAMPLE / 'labels'}",
            f"data.images_dir={SHARED_SAMPLE / 'images'}", f"data.split_files={SHARED_SAMPLE / 'splits'}",
            f"paths.data_dir={tmp / 'data'}", f"paths.output_dir={tmp / 'outputs'}"]
    proc = subprocess.run([sys.executable, "-m", "vqi.run", *args], cwd=tmp, capture_output=True, text=True,
                          env=cli_env(HYDRA_FULL_ERROR="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc


@pytest.fixture(scope="module")
def prepared_sample(sample_run):
    return sample_run[0] / "data" / "processed" / "ttpla-lists-500"   # split by the sample's lists


def test_a_real_data_run_is_not_named_or_logged_as_the_generated_demo(sample_run):
    """Issue 24: no `demo` experiment or run name, no generator settings in prepare's log."""
    tmp, proc = sample_run
    log = proc.stdout + proc.stderr
    assert "generated dataset" not in log and "num_images" not in log
    client = MlflowClient(f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}")
    assert client.get_experiment_by_name("vqi-demo") is None
    (run,) = client.search_runs([client.get_experiment_by_name("vqi-ttpla").experiment_id])
    assert run.data.tags["experiment_name"] == "ttpla" and run.info.run_name == "prepare-ttpla-500"
    assert not [k for k in run.data.params if k.startswith("data.generator")]


def test_sample_masks_for_every_image_and_skip_reported(prepared_sample):
    masks = sorted(p.stem for p in prepared_sample.glob("masks/*/*.png"))
    with_image = sorted(p.stem for p in (SHARED_SAMPLE / "images").glob("*.jpg"))
    assert masks == with_image and len(masks) == 14
    summary = json.loads((prepared_sample / "summary.json").read_text())
    assert [s["file"] for s in summary["skipped"]] == ["1_00186.json"]
    assert "no image" in summary["skipped"][0]["reason"]
    split_of = {p.stem: p.parent.name for p in prepared_sample.glob("masks/*/*.png")}
    for split in ("train", "val", "test"):
        listed = {line.strip()[:-5] for line in (SHARED_SAMPLE / "splits" / f"{split}.txt").read_text().splitlines()}
        assert {s for s, sp in split_of.items() if sp == split} == listed & set(with_image)


def test_sample_masks_match_independent_pycocotools(prepared_sample):
    ious: dict[int, list[float]] = {}
    for mask_path in sorted(prepared_sample.glob("masks/*/*.png")):
        ours = np.asarray(Image.open(mask_path))
        assert ours.shape == (SIZE, SIZE) and ours.dtype == np.uint8
        reference = independent_class_masks(SHARED_SAMPLE / "labels" / f"{mask_path.stem}.json")
        claims = sum(m.astype(np.int32) for m in reference.values())
        contested = claims > 1
        assert set(np.unique(ours)) - {0} == set(reference), mask_path.name
        for cls, ref in reference.items():
            a, b = (ours == cls) & ~contested, ref & ~contested
            ious.setdefault(cls, []).append((a & b).sum() / (a | b).sum())
    assert min(ious[1]) >= 0.98, ious[1]  # cable, including 04_3420.json's `Cable`
    for cls, values in ious.items():
        assert min(values) >= 0.98, (cls, values)


def test_mixed_case_label_counts_as_cable(prepared_sample):
    ours = np.asarray(Image.open(prepared_sample / "masks" / "val" / "04_3420.png"))
    ref = independent_class_masks(SHARED_SAMPLE / "labels" / "04_3420.json")
    assert (ours == 1).sum() > 0.9 * ref[1].sum() > 0
