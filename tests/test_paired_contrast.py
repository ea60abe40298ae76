"""scripts/paired_contrast.py: a paired Δ between arms of two studies' records, on their shared seeds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paired_contrast.py"


def write_records(path: Path, arm: str, values: dict[int, float]) -> Path:
    path.write_text("".join(json.dumps({"seed": s, "arm": arm, "metrics": {"truth/iou_cable": v}}) + "\n"
                            for s, v in values.items()))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_contrast_pairs_seeds_across_two_studies_and_names_a_missing_arm(tmp_path):
    a = write_records(tmp_path / "a.jsonl", "impactx", {1: 0.20, 2: 0.30, 3: 0.25, 9: 0.9})
    b = write_records(tmp_path / "b.jsonl", "oracle_cam", {1: 0.10, 2: 0.10, 3: 0.25})
    out = run(f"{a}:impactx", f"{b}:oracle_cam")
    assert out.returncode == 0, out.stderr
    assert "+10.00 ± 10.00" in out.stdout and "(n=3 seeds)" in out.stdout   # seed 9 has no pair
    missing = run(f"{a}:dilate", f"{b}:oracle_cam")
    assert missing.returncode != 0 and "no records of arm 'dilate'" in missing.stderr
