"""The known-truth studies end to end on tiny generated data (`python -m vqi.study`): every arm
of a protocol through augment and retrain, the table, a rerun that resumes; the budget study's
table and figure; and a study stopped by SIGTERM stopping its running stage with it."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vqi import PROJECT_ROOT

TINY = ["data.generator.num_images=12", "data.generator.size=96", "data.image_size=48", "train.epochs=1",
        "train.batch_size=2", "train.transforms.train.crop=48", "xai_methods=[gradcam]", "xai.max_images=2",
        "augment.unlabelled.min_area=1", "augment.enlarge.k=1",
        "augment.method=gradcam"]   # one epoch predicts no foreground: Table I chooses no method
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}


def study(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "vqi.study", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=PROJECT_ROOT)


def protocol(tmp_path: Path, arms: list[str], **settings) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({"seeds": [1, 2], "arms": arms, "overrides": TINY,
                                "settings": {"budget": 0.5, "cam_threshold": 0.3, "width_threshold": 1.5, **settings},
                                "primary": {"arm": "oracle_cam", "control": "oracle_softmax", "metric": "truth/iou_cable"}}))
    return path


@pytest.mark.slow
def test_every_arm_runs_and_a_rerun_resumes(tmp_path):
    every = ["original", "dilate", "width", "cam_threshold", "oracle_cam", "oracle_softmax", "oracle_cleanlab",
             "oracle_random", "oracle_all", "truth"]
    path = protocol(tmp_path, every)
    done = study("arms", "--protocol", str(path), "--output-dir", str(tmp_path / "all"),
                 "--tables-dir", str(tmp_path / "tables"), "--name", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "all" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["arm"]) for r in records) == sorted((s, a) for s in (1, 2) for a in every)
    with open(tmp_path / "tables" / "tiny.csv", newline="") as handle:
        rows = {row["Arm"]: row for row in csv.DictReader(handle)}
    assert "Expert at budget B, cam order" in rows and "±" in rows["Blind dilation (no explanation)"]["Δ cable vs truth"]
    assert "Primary endpoint: truth/iou_cable of oracle_cam − oracle_softmax" in (tmp_path / "tables" / "tiny.md").read_text()
    review = tmp_path / "all" / "seed1" / "review" / "oracle_cam" / "review.csv"
    with open(review, newline="") as handle:
        decisions = [row["decision"] for row in csv.DictReader(handle)]
    assert "pending" in decisions and {"accept", "reject"} & set(decisions)        # budget 0.5: half reviewed
    again = study("arms", "--protocol", str(path), "--output-dir", str(tmp_path / "all"),
                  "--tables-dir", str(tmp_path / "tables"), "--name", "tiny")
    assert again.returncode == 0 and "arm " not in again.stdout                     # finished pairs skipped
    other = study("arms", "--protocol", str(protocol(tmp_path, every, budget=0.3)), "--output-dir", str(tmp_path / "all"))
    assert other.returncode != 0 and "holds a study made with other settings" in other.stdout + other.stderr


@pytest.mark.slow
def test_budget_study_writes_its_table_and_figure(tmp_path):
    done = study("budget", "--seeds", "1", "2", "--output-dir", str(tmp_path / "b"), "--tables-dir",
                 str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"), "--", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "tables" / "review_budget.md").read_text()
    assert all(r in text for r in ("| cam |", "| softmax |", "| cleanlab |", "| width |")) and "AUBC cam − softmax" in text
    assert (tmp_path / "figures" / "review_budget.png").stat().st_size > 10_000


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_a_stopped_study_stops_its_running_stage(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vqi.study", "budget", "--seeds", "1", "--output-dir",
                             str(tmp_path / "b"), "--", *TINY, "train.epochs=50"], env=ENV, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not _children(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    (child,) = _children(proc.pid)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "stopped by signal 15 during stage=all" in output
    assert not Path(f"/proc/{child}").exists()                    # the stage went with it, none orphaned
