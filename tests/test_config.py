"""Every config file composes, and paths never depend on the working directory."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vqi.config import CONFIG_DIR, ConfigError, check_config, with_xai_method
from vqi.xai.catalogue import xai_catalogue
from vqi.stages import test as testing, train
from vqi.run import stage_argument_error

NOT_APP_GROUPS = {"hydra", "ranker", "study"}
"""Folders of conf/ that the app does not compose: Hydra's own, the rankers (vqi.config.build_ranker)
and the study's arms and protocols (vqi.study)."""
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in NOT_APP_GROUPS)
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONFIG_DIR / group).glob("*.yaml"))
           if not f.stem.startswith("_")]  # `_name.yaml`: a partial that options include


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_file_composes_resolves_and_passes_the_check(make_cfg, tmp_paths, group, option):
    """Choosing an option composes, resolves and passes the check, and every value the option's file
    sets is the value that runs: nothing later in the defaults list (an experiment file, another
    group) overrides it behind the user's back (issue 22: experiment=demo did, for train=...)."""
    cfg = make_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)
    check_config(cfg, ["stage=all", *tmp_paths, f"{group}={option}"])
    path = CONFIG_DIR / group / f"{option}.yaml"
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    own.pop("defaults", None)
    composed = OmegaConf.to_container(cfg, resolve=False)
    scope = composed if "@package _global_" in path.read_text() else composed[group]
    prefix = "" if scope is composed else f"{group}."
    given = {o.split("=", 1)[0] for o in tmp_paths}           # the test's own command-line keys
    wrong = {key: (value, _at(scope, key)) for key, value in (_leaves(own) if own else {}).items()
             if prefix + key not in given and _at(scope, key) != value}
    assert not wrong, f"{group}={option}: composed values differ from the file's ({{key: (file, composed)}}): {wrong}"


def _leaves(node, prefix=""):
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {k: v for name, value in node.items() for k, v in _leaves(value, f"{prefix}.{name}" if prefix else name).items()}


def _at(node, key):
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<missing>"
        node = node[part]
    return node


@pytest.mark.parametrize("overrides", [
    ["+serve.checkpoints.mine=/x/best.pt", "serve.discover=false"],   # an open mapping
    ["train.val_split=null", "train.lr=1", "experiment_name=7"],       # null anywhere, int for float/str
    ["+train.optimizer.amsgrad=true", "train/optimizer=sgd"],          # a _target_'s own arguments
    ["xai_methods=[gradcam]", "+data.class_map.insulator=void"],
    ["noise=none", "noise.cable_width_factor=[0.2,0.8]"],             # a range where the default is a number
    ["noise=realistic", "noise.cable_width_factor=0.7"],               # a number where it is a range
], ids=["open-map", "types", "target-kwargs", "lists-class-map", "width-range", "width-number"])
def test_valid_overrides_pass_the_check(make_cfg, tmp_paths, overrides):
    check_config(make_cfg(*overrides), ["stage=all", *tmp_paths, *overrides])


@pytest.mark.parametrize("override, message", [
    ("train.epochs=three", "train.epochs: expected an integer (the default is 50), got 'three'"),
    ("train.amp=maybe", "train.amp: expected a boolean"),
    ("train.lr=[1]", "train.lr: expected a number"),
    ("noise.cable_width_factor=[0.2,0.5,0.8]", "noise.cable_width_factor: expected a number or a range [low, high]"),
    ("noise.cable_width_factor=wide", "noise.cable_width_factor: expected a number or a range [low, high]"),
    ("+trian.epochs=3", "trian: unknown key (the composed config defines no such key); did you mean train?"),
    ("+train.epoch=3", "train.epoch: unknown key .*did you mean train.epochs?"),
])
def test_wrong_types_and_unknown_keys_are_named(make_cfg, tmp_paths, override, message):
    with pytest.raises(ConfigError, match=re.escape(message).replace(r"\.\*", ".*")):
        check_config(make_cfg(override), ["stage=all", *tmp_paths, override])


def test_each_annotation_noise_setting_names_its_own_data_folders(make_cfg):
    """A width range is tagged apart from any fixed factor ([f, f] writes f's files, so shares them)."""
    realistic, half = make_cfg("noise=realistic"), make_cfg("noise=half_width")
    assert realistic.data.noise_tag == "-noise-w0.3-1-o1-m0.1"
    assert half.data.noise_tag == "-noise-w0.5-o1-m0.1"
    assert make_cfg("noise=half_width", "noise.cable_width_factor=[0.5,0.5]").data.noise_tag == half.data.noise_tag
    assert make_cfg("noise=none", "noise.cable_width_factor=[1,1]").data.noise_tag == ""
    for key in ("labels_dir", "processed_dir"):
        assert realistic.data[key] != half.data[key] and realistic.data[key].count("-noise-w0.3-1-o1-m0.1") == 1
    with pytest.raises(Exception, match=r"noise\.cable_width_factor must be > 0 \(a range"):
        _ = make_cfg("noise.cable_width_factor=[0.8,0.3]").data.processed_dir


@pytest.mark.parametrize("overrides, name", [
    ([], "demo"), (["data=ttpla"], "ttpla"), (["data=coco"], "coco"), (["data=ttpla", "data.name=ttpla-sample"], "ttpla-sample"),
    (["experiment=paper"], "paper"), (["experiment=paper", "data=synthetic"], "paper"),
    (["data=ttpla", "experiment_name=mine"], "mine"),
], ids=["demo", "ttpla", "coco", "data-name", "paper", "paper-synthetic", "command-line"])
def test_only_the_generated_demo_is_named_demo(make_cfg, tmp_path, overrides, name):
    """Run names, figure titles and every per-experiment folder follow experiment_name: a run
    on real data with the demo's settings shares none of them with the generated demo."""
    cfg = make_cfg(*overrides)
    assert cfg.experiment_name == name and cfg.tracking.experiment == f"vqi-{name}"
    out = tmp_path / "outputs"
    assert cfg.train.checkpoint_dir == str(out / "checkpoints" / name / "baseline")
    assert cfg.test.output_dir == str(out / "test" / name / "baseline" / "test")
    assert cfg.xai.maps_dir == str(out / "maps" / name / "baseline")
    assert cfg.report.figures_dir == str(out / "figures" / name / "baseline")
    assert train.run_name(cfg) == f"train-{name}-baseline" and testing.run_name(cfg) == f"test-{name}-baseline-test"


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-3", "train.epochs must be >= 1, got -3"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.lr=-1", "train.lr must be > 0, got -1"),
    ("train.lr=0", "train.lr must be > 0, got 0"),
    ("train.accumulate=0", "train.accumulate must be >= 1, got 0"),
    ("train.num_workers=-1", "train.num_workers must be >= 0, got -1"),
    ("train.transforms.train.hflip=1.5", "train.transforms.train.hflip must be in [0, 1], got 1.5"),
    ("test.batch_size=0", "test.batch_size must be >= 1, got 0"),
    ("xai.batch_size=0", "xai.batch_size must be >= 1, got 0"),
    ("xai.max_images=0", "xai.max_images must be >= 1, got 0"),
    ("augment.accept_threshold=-1", "augment.accept_threshold must be >= 0, got -1"),
    ("augment.oracle.flip=-0.1", "augment.oracle.flip must be in [0, 1], got -0.1"),
    ("augment.unlabelled.min_area=0", "augment.unlabelled.min_area must be >= 1, got 0"),
    ("augment.oracle.budget=1.5", "augment.oracle.budget must be in [0, 1], got 1.5"),
    ("augment.enlarge.k_max=0", "augment.enlarge.k_max must be >= 1, got 0"),
    ("data.generator.num_images=0", "data.generator.num_images must be >= 1, got 0"),
    ("data.generator.workers=-2", "data.generator.workers must be >= 0, got -2"),
    ("data.test_fraction=1", "data.test_fraction must be in [0, 1), got 1"),
    ("metrics.tau=1.5", "metrics.tau must be in [0, 1], got 1.5"),
])
def test_impossible_values_are_refused_naming_the_key_and_the_range(make_cfg, tmp_paths, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(make_cfg(override), ["stage=all", *tmp_paths, override])


def test_values_at_the_edges_of_their_ranges_and_nulls_pass(make_cfg, tmp_paths):
    overrides = ["train.epochs=1", "train.num_workers=0", "train.lr=1e-9", "xai.max_images=null",
                 "augment.oracle.flip=1", "data.generator.workers=null", "data.test_fraction=0", "xai=scorecam",
                 "xai.method.batch_size=1"]
    check_config(make_cfg(*overrides), ["stage=all", *tmp_paths, *overrides])


def test_cli_refuses_an_impossible_epoch_count_before_reading_any_data(run_cli, tmp_path):
    proc = run_cli("stage=train", "train.epochs=-3", check=False)
    assert proc.returncode != 0 and "train.epochs must be >= 1, got -3" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_refuses_a_wrong_type_before_reading_any_data(run_cli, tmp_path):
    proc = run_cli("stage=train", "train.epochs=three", check=False)
    assert proc.returncode != 0 and "train.epochs: expected an integer" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_paths_are_absolute_and_follow_overrides(make_cfg, tmp_path):
    cfg = make_cfg()
    assert Path(cfg.paths.root_dir).is_absolute()
    assert cfg.paths.output_dir == str(tmp_path / "outputs")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'outputs'}/mlflow.db"


def test_unknown_stage_lists_the_valid_ones(run_cli):
    proc = run_cli("stage=bogus", check=False)
    assert proc.returncode != 0
    assert "unknown stage 'bogus'; valid stages: prepare" in proc.stderr


def test_unknown_stage_makes_no_run_folder(run_cli, tmp_path):
    proc = run_cli("stage=trian", check=False)
    assert proc.returncode == 2 and "unknown stage 'trian'" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_no_stage_says_so_plainly(run_cli, tmp_path):
    proc = run_cli(check=False)
    assert proc.returncode == 2 and "no stage given: python -m vqi.run stage=<name>" in proc.stderr
    assert "exception formatting" not in proc.stderr and not (tmp_path / "outputs").exists()


def test_switching_the_xai_method_keeps_the_runs_precision(make_cfg):
    """augment and sanity explain with another method's config; the run's mixed-precision settings stay."""
    cfg = make_cfg("xai=gradcam", "xai.amp=true", "xai.amp_dtype=bfloat16")
    switched = with_xai_method(cfg, "scorecam")
    assert switched.xai.name == "scorecam" and switched.xai.method.batch_size == 16
    assert (switched.xai.amp, switched.xai.amp_dtype) == (True, "bfloat16")
    assert switched.xai.batch_size == 1            # not set by the run: the method's file


def test_switching_the_xai_method_honours_the_runs_own_xai_overrides(make_cfg):
    """Issue 22: sanity and augment re-compose `xai=<method>`; an `xai.*` override of the command
    line (or of an experiment file) was dropped in silence when the method differed from `xai=`."""
    cfg = make_cfg("xai=gradcam", "xai.max_images=3", "xai.batch_size=2", "xai.figures=0",
                   "xai.target_layer=backbone.12", stage="sanity")
    switched = with_xai_method(cfg, "scorecam")
    assert (switched.xai.max_images, switched.xai.batch_size, switched.xai.figures) == (3, 2, 0)
    assert switched.xai.target_layer == "backbone.12"
    assert switched.xai.method.batch_size == 16 and switched.xai.method._target_.endswith("ScoreCAM")
    assert switched.xai.figures_dir.endswith("/scorecam")      # interpolations still follow the method
    # a method setting the run gave its own method carries over only where the other method has it
    lots = make_cfg("xai=lots", "xai.method.steps=3", "xai.max_images=4", stage="sanity")
    back = with_xai_method(lots, "gradcam")
    assert back.xai.max_images == 4 and "steps" not in back.xai.method
    # ... as ScoreCAM's masked inputs per pass to AblationCAM's ablated copies per pass (both default 16)
    assert with_xai_method(make_cfg("xai=scorecam", "xai.method.batch_size=5"), "ablationcam").xai.method.batch_size == 5


@pytest.mark.parametrize("argument", ["stage=../x", "stage=tr*ain", "stage="],
                         ids=["parent-folder", "glob-character", "empty"])
def test_an_odd_stage_name_is_refused_before_any_folder_is_made(run_cli, tmp_path, argument):
    """The run folder is `runs/${stage}/...`: a name that is no stage must not become a folder
    (`../x` would land outside `runs/`, an empty one directly in it)."""
    proc = run_cli(argument, check=False)
    assert proc.returncode == 2 and "valid stages: prepare" in proc.stderr, proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_every_name_of_a_stage_sweep_is_checked_as_hydra_reads_it():
    assert "unknown stage '../x'" in stage_argument_error(["-m", "stage=train,../x"])
    assert "unknown stage 'x'" in stage_argument_error(["-m", "stage=choice(train,x)"])
    assert "takes a name or a comma-separated list" in stage_argument_error(["-m", "stage=glob(*)"])
    assert stage_argument_error(["-m", "stage='explain',evaluate"]) is None


def test_xai_catalogue_is_one_entry_per_conf_xai_yaml():
    """Adding a CAM method is its class in vqi/xai/ and its yaml: lists of methods derive from here."""
    catalogue = xai_catalogue()
    assert list(catalogue) == sorted(p.stem for p in (CONFIG_DIR / "xai").glob("*.yaml") if not p.stem.startswith("_"))
    assert catalogue["gradcampp"].label == "GradCAM++" and catalogue["random_cam"].label == "Random-CAM"
    assert len({m.label for m in catalogue.values()}) == len(catalogue)
    for m in catalogue.values():     # each fast class exists where its yaml says
        if m.target:
            module, _, cls = m.target.rpartition(".")
            assert hasattr(importlib.import_module(module), cls), m.target
    standalone = {n for n, m in catalogue.items() if m.standalone}
    assert {"gradcam", "scorecam", "lots"} <= standalone
    assert not standalone & {"ensemble", "random_cam", "impactx", "eigencam"}   # members, ${seed}, checkpoint, library only
    with pytest.raises(ValueError, match="not built from a model and a layer alone"):
        catalogue["ensemble"].build(None, "layer")
