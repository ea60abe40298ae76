"""Test IoU of the trained model beside an untrained one built exactly as stage=train builds it.

    python scripts/untrained_vs_trained.py [hydra overrides, e.g. seed=1 paths.output_dir=...]

Needs a finished `stage=train` for the same overrides. The untrained model (the config's model,
seeded with `seed`, before any step) is saved as `<checkpoints>/<experiment>/untrained/untrained.pt`;
both are scored by `stage=test` (so by the same confusion-matrix code, logged as usual) and their
per-class IoU printed side by side.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vqi import PROJECT_ROOT
from vqi.config import compose_config
from vqi.data.dataset import class_names
from vqi.models import build_model, save_checkpoint
from vqi.stages.train import build_config
from vqi.utils.seed import seed_everything

UNTRAINED_TAG = "untrained"


def save_untrained(overrides: list[str]) -> Path:
    """Build the model as stage=train does (same config, same seed) and save it untouched."""
    cfg = compose_config(["stage=test", f"train.tag={UNTRAINED_TAG}", *overrides])
    names = class_names(Path(cfg.data.processed_dir), cfg.train.split)
    config = build_config(cfg, len(names))
    seed_everything(int(cfg.seed))
    model = build_model(**config)
    path = Path(cfg.train.checkpoint_dir) / "untrained.pt"
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "best_score": float("nan"),
                     "class_names": names, "model_config": config}, path)
    return path


def test_metrics(overrides: list[str]) -> dict[str, float]:
    """Run stage=test with `overrides`; its metrics.json's per-class IoU."""
    subprocess.run([sys.executable, "-m", "vqi.run", "stage=test", *overrides], check=True, cwd=PROJECT_ROOT)
    out_dir = Path(compose_config(["stage=test", *overrides]).test.output_dir)
    return json.loads((out_dir / "metrics.json").read_text())["metrics"]


def main() -> None:
    overrides = sys.argv[1:]
    untrained_ckpt = save_untrained(overrides)
    trained = test_metrics(overrides)
    untrained = test_metrics([*overrides, f"train.tag={UNTRAINED_TAG}", f"test.checkpoint={untrained_ckpt}"])
    print(f"\n{'test IoU %':<22}{'untrained':>10}{'trained':>10}")
    for key in trained:
        if key.startswith("iou_") or key == "miou_5":
            print(f"{key.removeprefix('iou_'):<22}{100 * untrained[key]:>10.1f}{100 * trained[key]:>10.1f}")


if __name__ == "__main__":
    main()
