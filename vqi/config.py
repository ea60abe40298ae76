"""Config plumbing for the entry point and stages: resolvers, composing the app's config, and
checking a composed config's keys and value types before anything runs."""
from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
import yaml

from vqi import CONFIG_DIR, FROM_CHECKOUT, PROJECT_ROOT
from vqi.data.synthetic import width_factor_range
from vqi.stages import STAGES



def default_root() -> Path:
    """Where data/ and outputs/ go by default: the checkout, or (installed from a wheel) the
    working directory; `paths.root_dir` overrides it."""
    return PROJECT_ROOT if FROM_CHECKOUT else Path.cwd()


def noise_tag(width_factor: Any, offset_px: float, missing: float) -> str:
    """Folder-name suffix of an annotation-noise setting: empty for no noise, so noise-free
    data keeps its folder names and each noise setting gets folders of its own. A width-factor
    range [low, high] reads `w<low>-<high>` (`w0.3-1`), a fixed factor `w<f>`; [f, f] is f
    (the same files), so no two settings that write different files share a folder."""
    low, high = width_factor_range(width_factor)   # raises naming noise.cable_width_factor
    if (low, high, float(offset_px), float(missing)) == (1.0, 1.0, 0.0, 0.0):
        return ""
    width = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    return f"-noise-w{width}-o{float(offset_px):g}-m{float(missing):g}"


def split_tag(split_files: Any, split_seed: int, test_fraction: float, val_fraction: float) -> str:
    """Folder-name part of how a real dataset is split: `lists` (data.split_files) or the seeded
    split's settings (`seed42-test0.2-val0.1`), so two splits never share a prepared folder."""
    if split_files:
        return "lists"
    return f"seed{int(split_seed)}-test{float(test_fraction):g}-val{float(val_fraction):g}"


def register_resolvers() -> None:
    """`${vqi_root:}` is the absolute `default_root()`, so a checkout's paths never depend on
    the working directory; `${vqi_noise_tag:w,o,m}` and `${vqi_split_tag:files,seed,test,val}`
    name data folders by their annotation noise and their split; `${vqi_if:c,a,b}` is a if c
    is set (not null, empty or false), else b."""
    if not OmegaConf.has_resolver("vqi_root"):
        OmegaConf.register_new_resolver("vqi_root", lambda: str(default_root()))
    if not OmegaConf.has_resolver("vqi_noise_tag"):
        OmegaConf.register_new_resolver("vqi_noise_tag", noise_tag)
    if not OmegaConf.has_resolver("vqi_split_tag"):
        OmegaConf.register_new_resolver("vqi_split_tag", split_tag)
    if not OmegaConf.has_resolver("vqi_if"):
        OmegaConf.register_new_resolver("vqi_if", lambda condition, then, otherwise: then if condition else otherwise)


def register_stage_group() -> None:
    """Make `stage` a config group as well as a key: one option per registered stage and `all`,
    each setting `stage` to its name. Hydra's tab completion offers a group's options after
    `stage=`, and the names come from the stage registry, not from a folder of files kept by
    hand. `conf/config.yaml` declares the group with no default (`stage: null`), so the key
    stays `???` until one is chosen; where the group is not registered, `stage=<name>` sets the
    key as a plain value, to the same config."""
    store = ConfigStore.instance()
    for name in [*STAGES, "all"]:
        store.store(group="stage", name=name, node={"stage": name}, package="_global_")


def compose_config(overrides: list[str]) -> DictConfig:
    """The app's config composed with `overrides`, inside the running Hydra app or outside it."""
    register_resolvers()
    register_stage_group()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


RUN_WIDE_XAI_KEYS = ("amp", "amp_dtype", "channels_last")
"""`xai` settings of the run, not of a method: they stay as the run set them when the method changes."""


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{dotted key: value}` of every leaf of a plain container (a list is one leaf)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for name, value in node.items():
        out.update(_leaves(value, f"{prefix}.{name}" if prefix else str(name)))
    return out


def with_xai_method(cfg: DictConfig, method: str) -> DictConfig:
    """A copy of `cfg` whose `xai` group is `conf/xai/<method>.yaml` (interpolations kept), with the
    run's own `RUN_WIDE_XAI_KEYS` and every other `xai` key the run set itself.

    What the run set is what its `xai` differs in from `conf/xai/<its method>.yaml` alone: a
    command-line `xai.max_images=5` or an experiment's `xai.figures: 0` is honoured by the other
    method as well (it used to be dropped in silence, issue 22); keys the other method does not
    have (`xai.method.steps` of LOTS for Grad-CAM) have nothing to honour. A value the run set
    equal to its own method's default is not told apart from that default."""
    if cfg.xai.name == method:
        return cfg
    node = compose_config([f"xai={method}"]).xai
    own = _leaves(OmegaConf.to_container(compose_config([f"xai={cfg.xai.name}"]).xai, resolve=False))
    run = _leaves(OmegaConf.to_container(cfg.xai, resolve=False))
    target = _leaves(OmegaConf.to_container(node, resolve=False))
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.xai = node
        for key in RUN_WIDE_XAI_KEYS:
            if key in cfg.xai:
                out.xai[key] = cfg.xai[key]
        for key, value in run.items():
            if key != "name" and key in target and (key not in own or own[key] != value):
                OmegaConf.update(out.xai, key, copy.deepcopy(value), merge=False)
    return out


def with_model_overrides(cfg: DictConfig, overrides) -> DictConfig:
    """A copy of `cfg` with a method's `xai.model_overrides` (plain `key=value` items, values read
    as YAML) applied: the config under which that method's own model is trained and explained;
    the keys that follow them (`xai.checkpoint` after `train.tag`) follow."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"xai.model_overrides: {item!r} is not key=value")
        OmegaConf.update(out, key, yaml.safe_load(value), merge=False)
    return out


def build_cam(cfg: DictConfig, model):
    """The configured method (`cfg.xai`) on the configured engine: `vqi.xai.factory.build_cam`
    with the method's `_target_` instantiated."""
    from vqi.xai.factory import build_cam as cam_factory  # torch and pytorch-grad-cam: only when asked

    xc = cfg.xai
    fast = instantiate(xc.method) if xc.engine == "fast" and "_target_" in xc.method else None
    return cam_factory(model, name=str(xc.name), engine=xc.engine, target_layer=xc.target_layer, method=fast,
                       library_method=xc.library_method, batch_size=int(xc.method.get("batch_size", 16)))


def proposal_explainers(cfg: DictConfig, method: str, model, needs: set[str]):
    """The CAMs of the augment / budget pass over the split (`vqi.study.proposing`): `method`'s,
    at `model.fine_target_layer` when `needs` has `cam_fine`, and `conf/xai/lots.yaml`'s (the
    run's `xai.*` when it runs with `xai=lots`) when it has `lots`."""
    from vqi.study.proposing import Explainers
    from vqi.study.rankers import CAM_FINE, LOTS

    xai_cfg = with_xai_method(cfg, method)
    fine = None
    if CAM_FINE in needs:
        fine_cfg = copy.deepcopy(xai_cfg)
        fine_cfg.xai.target_layer = cfg.model.fine_target_layer
        fine = build_cam(fine_cfg, model)
    lots = build_cam(with_xai_method(cfg, "lots"), model) if LOTS in needs else None
    return Explainers(build_cam(xai_cfg, model), fine, lots)


ENHANCED_TAG = "enhanced"
"""`train.tag` of the retraining on the augmented split (stage=retrain)."""


def enhanced_config(cfg: DictConfig) -> DictConfig:
    """The baseline's config, pointed at the augmented split and its own checkpoint folder: what
    stage=retrain trains and tests, and where stage=compare finds the enhanced model's runs."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.train.split = "${retrain.split}"
        out.train.checkpoint_dir = "${retrain.checkpoint_dir}"
        out.train.tag = ENHANCED_TAG
    return out


class ConfigError(ValueError):
    """A config value of the wrong type, out of its range, or a key the config does not define."""


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: `low` <= v (< when `low_open`), v <= `high` (< when
    `high_open`); None: unbounded on that side."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


COUNT = Range(1)                              # epochs, batch sizes, image counts
NON_NEGATIVE = Range(0)                       # workers, margins, figures to draw
POSITIVE = Range(0, low_open=True)            # learning rates, blur widths
SHARE = Range(0, 1)                           # probabilities, thresholds on maps in [0, 1]
FRACTION = Range(0, 1, high_open=True)        # a split's share of the images: all of them leaves none

RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE,
    "train.epochs": COUNT, "train.batch_size": COUNT, "train.lr": POSITIVE, "train.accumulate": COUNT,
    "train.aux_weight": NON_NEGATIVE, "train.bn_momentum": SHARE, "train.num_workers": NON_NEGATIVE,
    "train.stop_after_epochs": COUNT, "train.optimizer.weight_decay": NON_NEGATIVE,
    "train.optimizer.momentum": SHARE, "train.impactx.weight": NON_NEGATIVE, "train.impactx.channels": COUNT,
    "train.transforms.train.crop": COUNT, "train.transforms.train.hflip": SHARE,
    "train.transforms.train.vflip": SHARE, "train.transforms.train.color_p": SHARE,
    "train.transforms.train.brightness": NON_NEGATIVE, "train.transforms.train.contrast": NON_NEGATIVE,
    "train.transforms.train.saturation": NON_NEGATIVE, "train.transforms.train.hue": Range(0, 0.5),
    "test.batch_size": COUNT, "test.num_workers": NON_NEGATIVE, "test.overlays": NON_NEGATIVE,
    "xai.batch_size": COUNT, "xai.max_images": COUNT, "xai.figures": NON_NEGATIVE,
    "xai.method.batch_size": COUNT, "xai.method.steps": COUNT, "xai.method.step_size": POSITIVE,
    "xai.method.tolerance": FRACTION, "xai.method.blur_sigma": NON_NEGATIVE, "xai.method.bandwidths": Range(2),
    "metrics.tau": SHARE, "metrics.batch_size": COUNT, "metrics.pointing_radius": NON_NEGATIVE,
    "metrics.deletion_steps": COUNT, "metrics.deletion_sigma": POSITIVE,
    "sanity.max_images": COUNT, "sanity.batch_size": COUNT,
    "augment.batch_size": COUNT, "augment.enlarge.k": COUNT, "augment.enlarge.k_max": COUNT,
    "augment.unlabelled.min_area": COUNT, "augment.unlabelled.margin": NON_NEGATIVE,
    "augment.accept_threshold": NON_NEGATIVE,    # a ranker's score: maps in [0, 1], widths in px
    "augment.oracle.budget": SHARE, "augment.oracle.flip": SHARE, "budget.flip": SHARE,
    "data.image_size": COUNT, "data.test_fraction": FRACTION, "data.val_fraction": FRACTION,
    "data.point_tolerance": NON_NEGATIVE, "data.preview_images": NON_NEGATIVE,
    "data.generator.num_images": COUNT, "data.generator.size": Range(64), "data.generator.workers": NON_NEGATIVE,
}
"""Where a value of the right type can still be impossible (`train.epochs=-3` trained nothing and
finished; `train.batch_size=0` failed inside torch naming no key). Null stays allowed where the
type check allows it; a key the composed config lacks (another option of its group) is skipped."""


def _range_errors(config: dict[str, Any]) -> list[str]:
    """`<key> must be <range>, got <value>` for every key of `RANGES` whose own value (not an
    interpolation: its source key is checked) lies outside its range."""
    errors = []
    for key, allowed in RANGES.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool) and not allowed.holds(float(node)):
            errors.append(f"{key} must be {allowed}, got {node!r}")
    return errors


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]


def _is_group_choice(override: str) -> bool:
    """`model=...`, `train/optimizer=sgd`, `+experiment=...`: a choice of a config file."""
    return "=" in override and (CONFIG_DIR / _key(override)).is_dir()


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
               dict: "a mapping", list: "a list"}


def _expected(default: Any) -> type | None:
    """The type a value must have where the composed defaults hold `default` (None: any)."""
    if default is None or (isinstance(default, str) and ("${" in default or default == "???")):
        return None  # no default type, an interpolation, or a value left to the command line
    for kind in (bool, int, float, str, dict, list):
        if isinstance(default, kind):
            return kind
    return None


def _fits(value: Any, kind: type) -> bool:
    if value is None or (isinstance(value, str) and "${" in value):
        return True  # null is allowed everywhere (e.g. train.val_split=null); interpolations resolve later
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, (str, int, float, bool))
    return isinstance(value, kind)


NUMBER_OR_RANGE_KEYS = frozenset({"noise.cable_width_factor"})
"""Keys that take a number or a [low, high] range of two numbers, whichever their default is."""


def _number_or_range(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) == 2 and all(v is not None and _fits(v, float) for v in value)
    return _fits(value, float)


def _open(default: dict, name: str) -> bool:
    """A mapping that takes new keys: an empty one (`serve.checkpoints: {}`), a class map, or the
    arguments of a `_target_` (checked by the call)."""
    return not default or name.endswith("class_map") or "_target_" in default


def _compare(value: Any, default: Any, key: str, errors: list[str]) -> None:
    if key in NUMBER_OR_RANGE_KEYS:
        if not _number_or_range(value):
            errors.append(f"{key}: expected a number or a range [low, high] of two numbers, got {value!r}")
        return
    kind = _expected(default)
    if kind is None:
        return
    if not _fits(value, kind):
        errors.append(f"{key}: expected {_TYPE_NAMES[kind]} (the default is {default!r}), got {value!r}")
        return
    if kind is dict and isinstance(value, dict):
        for name, item in value.items():
            where = f"{key}.{name}" if key else str(name)
            if name in default:
                _compare(item, default[name], where, errors)
            elif not _open(default, key):
                close = difflib.get_close_matches(str(name), [str(k) for k in default], n=1)
                hint = f"; did you mean {(f'{key}.' if key else '') + close[0]}?" if close else ""
                errors.append(f"{where}: unknown key (the composed config defines no such key){hint}")


def check_config(cfg: DictConfig, overrides: list[str]) -> None:
    """Raise `ConfigError` naming every key whose value has the wrong type, lies outside its
    `RANGES` entry (`train.epochs must be >= 1, got -3`), or that the config does not define
    (e.g. `+trian.epochs=3`), before any data or model is loaded.

    The schema is the config composed from the same config files without the command line's
    values: every key it defines keeps the type of its default (an int stays an int, a float
    takes an int, a string takes any scalar, null is always allowed). New keys are accepted only
    in open mappings (empty ones, class maps, a `_target_`'s arguments), so keys that config
    files add are picked up without a hand-written schema.
    """
    base = compose_config([o for o in overrides if _is_group_choice(o)])
    errors: list[str] = []
    config = OmegaConf.to_container(cfg, resolve=False)
    _compare(config, OmegaConf.to_container(base, resolve=False), "", errors)
    errors += _range_errors(config)
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


LOCATION_KEYS = ("output_dir", "data_dir", "root_dir")
"""`paths.*` folders that say where a checkout lies, not what it computes."""


def relocatable(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (plain containers) with the checkout's own folders (`paths.output_dir`,
    `data_dir`, `root_dir`) written as `${paths.<key>}` in every string, and `paths` left out:
    what decides a result, the same in a moved or copied checkout."""
    paths = config.get("paths") or {}
    roots = sorted(((str(paths[k]).rstrip("/"), f"${{paths.{k}}}") for k in LOCATION_KEYS if paths.get(k)),
                   key=lambda item: -len(item[0]))

    tokens = dict(roots)
    pattern = (re.compile("|".join(f"{re.escape(root)}(?![^/])" for root, _ in roots)) if roots else None)

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        if isinstance(node, str) and pattern is not None:
            return pattern.sub(lambda m: tokens[m.group(0)], node)
        return node

    return swap({k: v for k, v in config.items() if k != "paths"})


def ranker_names() -> list[str]:
    """The rankers a config may name: one `conf/ranker/<name>.yaml` each."""
    return sorted(p.stem for p in (CONFIG_DIR / "ranker").glob("*.yaml"))


def build_ranker(cfg: DictConfig, name: str, key: str = "augment.ranker"):
    """The ranker `conf/ranker/<name>.yaml` instantiates (its `${seed}` is the run's seed)."""
    if name not in ranker_names():
        raise ValueError(f"{key}: unknown ranker {name!r}; expected one of {', '.join(ranker_names())}")
    root = OmegaConf.create({"seed": int(cfg.seed), "ranker": OmegaConf.load(CONFIG_DIR / "ranker" / f"{name}.yaml")})
    return instantiate(root.ranker)


