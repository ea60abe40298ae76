"""A known-truth study's seeds as a Hydra multirun, one job per seed, so a launcher runs them in
parallel: joblib on one machine, submitit on a SLURM cluster (docs/study.md, Running it).

A job runs `run_seed`, the code path of `python -m vqi.study arms`: it skips the (seed, arm)
pairs already in results.jsonl and appends its records under a lock, so a rerun resumes and
parallel jobs share the file safely. Each seed logs to its own SQLite store under its folder
(`tracking.uri` follows `paths.output_dir`), so parallel seeds never share a SQLite file;
`tracking_uri=http://...` sends every job's runs to one tracking server instead. After the jobs,
the callback `WriteStudyTable` writes the study's table.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vqi import PROJECT_ROOT
from vqi.config import CONFIG_DIR
from vqi.study.arm_study import RESULTS, load_protocol, run_seed, start_study, write_outputs
from vqi.study.records import load_records

SWEEP_CONFIG_DIR = CONFIG_DIR / "study" / "sweep"


def register_resolvers() -> None:
    """`${vqi_outputs:}`: the checkout's outputs/ (as `python -m vqi.study`'s defaults);
    `${vqi_stem:<path>}`: a protocol's name, its file's stem."""
    if not OmegaConf.has_resolver("vqi_outputs"):
        OmegaConf.register_new_resolver("vqi_outputs", lambda: str(PROJECT_ROOT / "outputs"))
    if not OmegaConf.has_resolver("vqi_stem"):
        OmegaConf.register_new_resolver("vqi_stem", lambda path: Path(path).stem)


register_resolvers()   # at import: a launcher's job process composes the config again


def tracking_overrides(uri: str | None) -> tuple[str, ...]:
    """The stages' overrides that log to the tracking server at `uri` (none: each seed's SQLite)."""
    return ("tracking=server", f"tracking.uri={uri}") if uri else ()


@contextmanager
def outside_the_sweep_app() -> Iterator[None]:
    """Step out of this app's Hydra and back: `run_seed` composes vqi's own config
    (`vqi.config.compose_config`), which takes a running Hydra app to be vqi's."""
    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def seed_job(cfg: DictConfig) -> int:
    """One seed of the protocol (a Hydra job); the number of (seed, arm) records it added."""
    protocol = load_protocol(Path(cfg.protocol))
    seed = int(cfg.study_seed)
    if seed not in protocol["seeds"]:
        raise ValueError(f"seed {seed} is not one of the protocol's seeds {protocol['seeds']} ({cfg.protocol})")
    output_dir = Path(cfg.output_dir)
    arms = start_study(protocol, output_dir)
    with outside_the_sweep_app():
        return len(run_seed(protocol, arms, seed, output_dir, tracking_overrides(cfg.tracking_uri)))


def write_study_table(cfg: DictConfig) -> None:
    """The study's table over every finished record (of every seed, not only this launch's)."""
    if OmegaConf.is_missing(cfg, "protocol"):   # several protocols swept: one table each by `vqi.study arms`
        print("several protocols: write each table with python -m vqi.study arms --protocol ...", flush=True)
        return
    protocol, output_dir = load_protocol(Path(cfg.protocol)), Path(cfg.output_dir)
    records = load_records(output_dir / RESULTS)
    if records:
        write_outputs(records, protocol, start_study(protocol, output_dir), Path(cfg.tables_dir), str(cfg.name))


class WriteStudyTable(Callback):
    """Hydra callback: the table once a launch's jobs have finished (all of them succeeded)."""

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        write_study_table(config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_study_table(config)
