"""Every experiment file runs: composed by Hydra as the CLI composes it, prepared and trained for
real (MLflow into tmp, torchvision models with random weights), at the sizes of experiment=debug.
experiment=debug itself runs as is; any other experiment (experiment=paper: TTPLA at 500 px,
DeepLabv3-ResNet101) gets debug's sizes as command-line overrides, for the keys its composed config
has, and, on real data, a small labelme folder written by the generator in TTPLA's layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from vqi.config import CONFIG_DIR, compose_config
from vqi.data.synthetic import generate
from vqi.models.checkpoint import load_checkpoint

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
DEBUG = OmegaConf.load(CONFIG_DIR / "experiment" / "debug.yaml")


def _flat(node, prefix=""):
    if isinstance(node, dict) and node:
        return [kv for name, value in node.items() for kv in _flat(value, f"{prefix}.{name}" if prefix else name)]
    return [(prefix, node)]


def _value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").replace(" ", "")


def debug_sizes(cfg) -> list[str]:
    """experiment=debug's settings as overrides, for the keys `cfg` has (not its experiment_name)."""
    pairs = _flat(OmegaConf.to_container(DEBUG))
    return [f"{key}={_value(value)}" for key, value in pairs
            if key != "experiment_name" and OmegaConf.select(cfg, key, default="<absent>") != "<absent>"]


def test_the_debug_sizes_are_overrides_hydra_reads_back_as_debug_sets_them(tmp_paths):
    """The helper above: `experiment=demo` + debug's sizes as overrides composes what debug composes."""
    demo = compose_config(["stage=all", *tmp_paths])
    debug = compose_config(["stage=all", "experiment=debug", *tmp_paths])
    as_overrides = compose_config(["stage=all", *tmp_paths, *debug_sizes(demo)])
    for key, _ in _flat(OmegaConf.to_container(DEBUG)):
        if key != "experiment_name":
            assert OmegaConf.select(as_overrides, key) == OmegaConf.select(debug, key), key


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_prepares_and_trains_at_debug_sizes(run_cli, tmp_path, tmp_paths, experiment):
    overrides = [f"experiment={experiment}"]
    cfg = compose_config(["stage=all", *tmp_paths, *overrides])
    if experiment != "debug":
        overrides += debug_sizes(cfg)
    if not cfg.data.get("generator"):        # real data (TTPLA's labelme layout): a dozen generated images
        folder = generate(tmp_path / "labelme", num_images=12, size=64, seed=3, workers=0)
        overrides += [f"data.labels_dir={folder}", "data.name=labelme-debug"]
    overrides += ["model.weights=null", "model.weights_backbone=null", "device=cpu"]   # random weights, no download
    run_cli("stage=all", "until=train", *overrides)
    cfg = compose_config(["stage=all", *tmp_paths, *overrides])
    best = load_checkpoint(Path(cfg.train.checkpoint_dir) / "best.pt")
    assert best["epoch"] == 1 and best["config"]["model"]["arch"] == cfg.model.arch
    assert best["config"]["data"]["image_size"] == DEBUG.data.image_size
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs) == ["all", "prepare", "train"]
    assert {r.info.status for r in runs} == {"FINISHED"}
