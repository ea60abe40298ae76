"""The known-truth study's arms (docs/study.md): per seed the baseline once (`stage=all
until=report`: prepare, train, test, Table I, the chosen method), then each arm on it: its
augment overrides and a retraining into its own split, review folder and checkpoint folder.

An arm is one `conf/study/arm/<name>.yaml` (label, `retrain`: none | augmented | truth | unchanged,
and its overrides, whose `${settings.*}` come from the protocol: the augment stage's for `augmented`,
the retrain stage's for `unchanged`, which retrains on the training split as annotated, e.g. with
IMPACTX's explanation branch); a protocol is one yaml (seeds,
settings, arms, overrides, primary endpoint). Every (seed, arm) result is appended to
`<output-dir>/results.jsonl` as it finishes; a rerun skips finished ones (the stages reuse
finished work too), and a study folder holds one protocol (another is refused).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vqi.config import CONFIG_DIR, compose_config
from vqi.reporting.tables import write_table
from vqi.study.budget_study import check_settings
from vqi.study.records import append_record, load_records
from vqi.study.runner import vqi_run
from vqi.study.tables import paired, seed_values, study_table

ARM_DIR = CONFIG_DIR / "study" / "arm"
RETRAIN = ("none", "augmented", "truth", "unchanged")


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    retrain: str
    overrides: tuple[str, ...]


def arm_names() -> list[str]:
    return sorted(p.stem for p in ARM_DIR.glob("*.yaml"))


def load_arm(name: str, settings: dict) -> Arm:
    """`conf/study/arm/<name>.yaml` with its `${settings.*}` filled in from the protocol."""
    path = ARM_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown arm {name!r}; arms: {', '.join(arm_names())}")
    node = OmegaConf.create({"settings": settings, "arm": OmegaConf.load(path)})
    arm = OmegaConf.to_container(node.arm, resolve=True)
    if arm.get("retrain") not in RETRAIN:
        raise ValueError(f"{path}: field 'retrain' must be one of {', '.join(RETRAIN)}, got {arm.get('retrain')!r}")
    return Arm(name, str(arm["label"]), arm["retrain"], tuple(str(o) for o in arm.get("overrides", [])))


def load_protocol(path: Path) -> dict:
    protocol = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    missing = [k for k in ("seeds", "settings", "arms", "overrides") if k not in protocol]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    return protocol


def _metrics(path: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads(path.read_text())["metrics"].items() if v is not None}


def _training_label_iou(processed: Path) -> float | None:
    """Cable label IoU of the training split as annotated (against the truth), from prepare's summary."""
    summary = json.loads((processed / "summary.json").read_text())
    return summary.get("label_iou", {}).get("train", {}).get("iou_cable")


def retrain_overrides(arm: Arm, folder: Path) -> list[str]:
    """The retrain stage's overrides of a retraining arm, beside the protocol's: its own checkpoint
    and test folders, and its split (`train` as annotated, or the arm's augmented one) and settings."""
    place = [f"retrain.checkpoint_dir={folder / 'checkpoints' / arm.name}", f"test.output_dir={folder / 'test' / arm.name}"]
    if arm.retrain == "truth":
        return [*place, "retrain.split=train", "train.labels=truth"]
    if arm.retrain == "unchanged":
        return [*place, "retrain.split=train", *arm.overrides]
    return [*place, f"retrain.split=train_{arm.name}"]


def run_arm(arm: Arm, folder: Path, common: list[str], processed: Path, experiment: str) -> dict[str, float]:
    """Run one arm on a finished baseline (prepared in `processed`); its metrics (fractions)."""
    log = folder / "logs" / f"{arm.name}.log"
    if arm.retrain == "none":
        metrics = _metrics(folder / "test" / experiment / "baseline" / "test" / "metrics.json")
        metrics["label_iou_cable"] = _training_label_iou(processed)
        return metrics
    if arm.retrain in ("truth", "unchanged"):
        vqi_run("retrain", [*common, *retrain_overrides(arm, folder)], log)
        metrics = _metrics(folder / "test" / arm.name / "metrics.json")
        if arm.retrain == "unchanged":
            metrics["label_iou_cable"] = _training_label_iou(processed)
        return metrics
    split = f"train_{arm.name}"
    vqi_run("augment", [*common, *arm.overrides, f"augment.output_split={split}",
                        f"augment.review_dir={folder / 'review' / arm.name}"], log)
    vqi_run("retrain", [*common, *retrain_overrides(arm, folder)], log)
    metrics = _metrics(folder / "test" / arm.name / "metrics.json")
    summary = json.loads((processed / "annotations" / f"{split}_summary.json").read_text())
    metrics["label_iou_cable"] = summary.get("label_iou", {}).get("after", {}).get("iou_cable")
    metrics.update(summary.get("proposal_quality", {}))
    metrics.update({f"decisions/{k}": summary[k] for k in ("accepted", "rejected", "pending")})
    return metrics


RESULTS = "results.jsonl"


def start_study(protocol: dict, output_dir: Path) -> list[Arm]:
    """The protocol's arms, once its study folder is known to hold this protocol (or none yet)."""
    check_settings(output_dir, {"kind": "arms", **protocol})
    return [load_arm(a, protocol["settings"]) for a in protocol["arms"]]


def run_seed(protocol: dict, arms: list[Arm], seed: int, output_dir: Path, tracking: tuple[str, ...] = (),
             started: float | None = None) -> list[dict]:
    """One seed of a protocol: its baseline, then each arm whose (seed, arm) is not yet in
    results.jsonl, each record appended as it finishes; the records it added. The seed's folder
    (data, checkpoints, its own SQLite tracking store) is its own, so seeds may run in parallel.
    `tracking` overrides where the stages log (e.g. a tracking server): not part of the protocol,
    as it changes no result."""
    results_file = output_dir / RESULTS
    done = {(r["seed"], r["arm"]) for r in load_records(results_file)}
    todo = [a for a in arms if (seed, a.name) not in done]
    if not todo:
        return []
    started = time.time() if started is None else started
    folder = output_dir / f"seed{seed}"
    common = [f"seed={seed}", f"paths.output_dir={folder}", f"paths.data_dir={folder / 'data'}",
              *protocol["overrides"], *tracking]
    tic = time.time()
    print(f"[{time.time() - started:6.0f}s] seed {seed}: baseline and Table I", flush=True)
    vqi_run("all", [*common, "until=report"], folder / "logs" / "baseline.log")
    baseline_seconds = time.time() - tic
    seed_cfg = compose_config(["stage=prepare", *common])
    processed, experiment = Path(seed_cfg.data.processed_dir), str(seed_cfg.experiment_name)
    added = []
    for arm in todo:
        tic = time.time()
        print(f"[{time.time() - started:6.0f}s] seed {seed}: arm {arm.name}", flush=True)
        metrics = run_arm(arm, folder, common, processed, experiment)
        record = {"seed": seed, "arm": arm.name, "metrics": metrics,
                  "seconds": round(time.time() - tic + (baseline_seconds if arm.retrain == "none" else 0), 1)}
        append_record(results_file, record)
        added.append(record)
    return added


def run_arm_study(protocol: dict, output_dir: Path, tables_dir: Path, name: str = "study") -> list[dict]:
    """Every (seed, arm) of the protocol not yet in results.jsonl, seed after seed; then the table.
    `python -m vqi.study.sweep` runs the same seeds as parallel jobs on a Hydra launcher."""
    arms = start_study(protocol, output_dir)
    started = time.time()
    for seed in protocol["seeds"]:
        run_seed(protocol, arms, seed, output_dir, started=started)
    records = load_records(output_dir / RESULTS)
    write_outputs(records, protocol, arms, tables_dir, name)
    return records


def write_outputs(records: list[dict], protocol: dict, arms: list[Arm], tables_dir: Path, name: str) -> list[Path]:
    notes = [f"Seeds {sorted({r['seed'] for r in records})}; settings {protocol['settings']}; overrides: "
             f"{' '.join(protocol['overrides']) or '(none)'}; IoU in % on each seed's generated test split, against "
             "the true masks and against the noisy annotation (the paper's protocol).",
             "Δ: paired difference to the original model of the same seed, percentage points: "
             "mean ± sample std [95% t interval].",
             "enlarge / perplexed P and R: precision and recall of the accepted changes against the truth (%).",
             f"Total run time of the finished records: {sum(r['seconds'] for r in records) / 60:.1f} min."]
    primary = protocol.get("primary")
    if primary:
        values = {a: seed_values([r for r in records if r["arm"] == a], primary["metric"])
                  for a in (primary["arm"], primary["control"])}
        result = paired(values[primary["arm"]], values[primary["control"]])
        if result is not None:
            notes.append(f"Primary endpoint: {primary['metric']} of {primary['arm']} − {primary['control']}: "
                         f"{result.cell()} points over {result.n} seeds "
                         f"({'CI excludes 0' if result.excludes_zero else 'CI includes 0'}).")
    table, _ = study_table(records, {a.name: a.label for a in arms}, "Known-truth study: arms against the original", notes)
    paths = write_table(table, tables_dir, name)
    print(table.markdown())
    return paths
