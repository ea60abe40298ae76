"""scripts/study.py end to end on tiny generated data: every arm (the oracle too) runs through
augment and retrain, the table is written, and a rerun resumes instead of redoing."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from vqi import PROJECT_ROOT

TINY = ["data.generator.num_images=12", "data.generator.size=96", "data.image_size=48", "train.epochs=1",
        "train.batch_size=2", "train.transforms.train.crop=48", "xai_methods=[gradcam]", "xai.max_images=2",
        "augment.enlarge.min_ring_attention=0", "augment.perplexed.min_area=1"]


def study(tmp_path, *args, extra=()):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "study.py"),
                           "--output-dir", str(tmp_path / "study"), "--tables-dir", str(tmp_path / "tables"),
                           *args, "--", *TINY, *extra], capture_output=True, text=True, env=env, timeout=1800)


@pytest.mark.slow
def test_every_arm_runs_and_a_rerun_resumes(tmp_path):
    first = study(tmp_path, "--seeds", "1", "2", "--arms", "original", "dilate")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = study(tmp_path, "--seeds", "1", "2")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "arm dilate" not in second.stdout and "arm original" not in second.stdout   # finished pairs skipped
    records = [json.loads(line) for line in (tmp_path / "study" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["arm"]) for r in records) == sorted(
        (s, a) for s in (1, 2) for a in ("original", "cam", "cam_oracle", "dilate", "random_cam", "truth"))
    oracle = [r for r in records if r["arm"] == "cam_oracle"]
    assert all("truth/iou_cable" in r["metrics"] and "enlarge/precision" in r["metrics"] for r in oracle)
    with open(tmp_path / "tables" / "study.csv", newline="") as handle:
        rows = {row["Arm"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"Original (annotation as is)", "CAM proposals, threshold policy",
                         "CAM proposals, oracle expert", "Blind dilation (no explanation)",
                         "Random-CAM proposals, threshold policy", "Upper bound: trained on truth"}
    assert "±" in rows["Blind dilation (no explanation)"]["Δ cable vs truth"]
    review = tmp_path / "study" / "seed1-w0.5" / "review" / "cam_oracle" / "review.csv"
    with open(review, newline="") as handle:
        assert {row["decision"] for row in csv.DictReader(handle)} <= {"accept", "reject"}
    other = study(tmp_path, "--seeds", "1", extra=["train.epochs=2"])
    assert other.returncode != 0 and "holds a study made with other settings" in other.stdout + other.stderr
