"""Stage `retrain`: the baseline's training (same config and seed) on the augmented split,
then tested on the original, untouched test split.

Config keys: `retrain.split` (the augmented split), `retrain.checkpoint_dir`, and everything
`stage=train` and `stage=test` read (`train.impactx.enabled=true`: an IMPACTX retraining, the
study's `impactx` arm). The run's tags and metrics are those of both stages.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vqi.config import enhanced_config
from vqi.stages import test, train


def run_name(cfg: DictConfig) -> str:
    return f"retrain-{cfg.experiment_name}"


def resume_run_id(cfg: DictConfig) -> str | None:
    return train.resume_run_id(enhanced_config(cfg))


def run(cfg: DictConfig) -> dict[str, float]:
    enhanced = enhanced_config(cfg)
    trained = train.run(enhanced)
    tested = test.run(enhanced)
    return {**{f"train_{k}": v for k, v in trained.items()}, **tested}


def inputs(cfg: DictConfig) -> list[Path]:
    """The augmented annotations: they (with the originals) determine the augmented masks; for an
    IMPACTX retraining also its teacher (checkpoint and Table I's choice)."""
    return [Path(cfg.data.processed_dir) / "annotations" / f"{cfg.retrain.split}.json",
            *train.impactx_inputs(cfg)]
