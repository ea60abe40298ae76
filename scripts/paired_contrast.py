"""A paired difference between two arms of study records, possibly of two studies on the same
seeds (the IMPACTX addendum's secondary contrast: its `impactx` against the main confirmatory
study's `oracle_cam`, docs/study.md): mean ± sample std [95% t interval] over the shared seeds,
as the study's tables compute Δ.

    python scripts/paired_contrast.py docs/records/study_confirmatory_impactx.results.jsonl:impactx \
        docs/records/study_confirmatory.results.jsonl:oracle_cam --metric truth/iou_cable
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vqi.study.records import load_records
from vqi.study.tables import paired, seed_values


def arm_values(spec: str, metric: str) -> dict[int, float]:
    """{seed: metric} of `<results.jsonl>:<arm>`."""
    path, sep, arm = spec.rpartition(":")
    if not sep or not path:
        raise SystemExit(f"{spec!r}: expected <results.jsonl>:<arm>")
    records = [r for r in load_records(Path(path)) if r["arm"] == arm]
    if not records:
        raise SystemExit(f"{path}: no records of arm {arm!r}")
    return seed_values(records, metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="<results.jsonl>:<arm>, the minuend")
    parser.add_argument("b", help="<results.jsonl>:<arm>, the subtrahend")
    parser.add_argument("--metric", action="append", help="record key (repeatable; default truth/iou_cable)")
    args = parser.parse_args()
    for metric in args.metric or ["truth/iou_cable"]:
        a, b = arm_values(args.a, metric), arm_values(args.b, metric)
        result = paired(a, b)
        print(f"{metric}: {args.a} − {args.b}: " + (f"{result.cell()} (n={result.n} seeds)" if result else "no shared seed"))


if __name__ == "__main__":
    main()
