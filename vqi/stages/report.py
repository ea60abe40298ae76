"""stage=report: Table I from the tracked evaluate runs of one checkpoint, and the chosen method;
Table III. (Table II, original vs enhanced, is stage=compare's.)

Config keys read: `xai.checkpoint`, `xai_methods` (row order; other evaluated methods follow),
`paths.tables_dir`, `report.{choose_by, floor, sanity_max_abs_rho, figures_dir}`. Takes the latest
FINISHED `evaluate` run per method tagged with the checkpoint's hash (in this MLflow experiment),
writes `table1.md/.csv/.tex` and `chosen_method.json` (read by the augment stage) to
`paths.tables_dir`, logs them. Table III (`table3.md/.csv/.tex`, a curves figure) joins those runs'
deletion / insertion / pointing with the latest FINISHED `sanity` run of the checkpoint. The
chosen method follows Table I's rule unless `report.choose_by=table3`; the floor (Random-CAM) is
never chosen, and the notes say when the chosen method fails the sanity check or does not beat it.
When every method explained 0 units, no method is chosen (Table I says why; no chosen_method.json).
A method of `xai_methods` that explains a model of its own (`xai.model_overrides`: IMPACTX) is a
row of both tables from its own model's evaluate and sanity runs, never chosen.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vqi import tracking
from vqi.config import with_model_overrides
from vqi.reporting.charts import save_curves_figure, save_table_chart
from vqi.reporting.chosen import CHOSEN
from vqi.reporting.examples import methods_rows
from vqi.reporting.figures import save_methods_figure
from vqi.reporting.table1 import METRICS, MethodResult, build_table1, choose_method, label
from vqi.reporting.table3 import FLOOR_KEYS, build_table3, floor_shortfalls, sanity_verdict
from vqi.reporting.tables import write_table
from vqi.utils.atomic import write_json
from vqi.xai.catalogue import own_model_methods
from vqi.xai.maps import META, file_hash, read_meta

log = logging.getLogger(__name__)

CHOOSE_BY = ("table1", "table3")


def run_name(cfg: DictConfig) -> str:
    return f"report-{cfg.experiment_name}"


def evaluate_runs(experiment_id: str, checkpoint_hash: str) -> dict[str, MethodResult]:
    """The latest finished evaluate run per method for a checkpoint hash."""
    runs = MlflowClient().search_runs(
        tracking.lineage(experiment_id), order_by=["attributes.start_time DESC"], max_results=5000,
        filter_string=f"tags.stage = 'evaluate' and tags.checkpoint_hash = '{checkpoint_hash}' "
                      "and attributes.status = 'FINISHED'")
    latest: dict[str, MethodResult] = {}
    for run in runs:
        method = run.data.tags.get("xai_method")
        if method and method not in latest:
            latest[method] = MethodResult(method, dict(run.data.metrics), run.data.tags.get("device", "?"),
                                          run.info.run_id)
    return latest


class OwnModelRow(NamedTuple):
    """The evaluate run of a method that explains a model of its own, and that model."""
    result: MethodResult
    checkpoint: Path
    checkpoint_hash: str
    overrides: tuple[str, ...]


def own_model_rows(cfg: DictConfig, experiment_id: str) -> dict[str, OwnModelRow]:
    """For each method of `xai_methods` that explains a model of its own (IMPACTX): the latest
    finished evaluate run of its model, the checkpoint under its `model_overrides`. A method whose
    model is not trained or not evaluated yet is left out (Table I's note names it)."""
    out = {}
    for method, overrides in own_model_methods(cfg.xai_methods).items():
        checkpoint = Path(with_model_overrides(cfg, overrides).xai.checkpoint)
        if not checkpoint.is_file():
            continue
        digest = file_hash(checkpoint)
        result = evaluate_runs(experiment_id, digest).get(method)
        if result is not None:
            out[method] = OwnModelRow(result, checkpoint, digest, overrides)
    return out


def sanity_run(experiment_id: str, checkpoint_hash: str):
    """The latest finished sanity run for a checkpoint hash, or None."""
    runs = MlflowClient().search_runs(
        tracking.lineage(experiment_id), order_by=["attributes.start_time DESC"], max_results=1,
        filter_string=f"tags.stage = 'sanity' and tags.checkpoint_hash = '{checkpoint_hash}' "
                      "and attributes.status = 'FINISHED'")
    return runs[0] if runs else None


def run(cfg: DictConfig) -> dict[str, float]:
    checkpoint = Path(cfg.xai.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"xai.checkpoint {checkpoint} does not exist (run stage=train first)")
    if cfg.report.choose_by not in CHOOSE_BY:
        raise ValueError(f"report.choose_by: expected one of {CHOOSE_BY}, got {cfg.report.choose_by!r}")
    checkpoint_hash = file_hash(checkpoint)
    experiment_id = mlflow.active_run().info.experiment_id
    found = evaluate_runs(experiment_id, checkpoint_hash)
    if not found:
        raise ValueError(f"no finished evaluate run for checkpoint {checkpoint} (hash {checkpoint_hash}); "
                         "run stage=explain,evaluate for each method first")
    own = own_model_rows(cfg, experiment_id)
    everything = {**found, **{m: row.result for m, row in own.items()}}
    wanted = [m for m in cfg.xai_methods if m in everything]
    results = [everything[m] for m in wanted] + [found[m] for m in sorted(found) if m not in wanted]
    missing = [m for m in cfg.xai_methods if m not in everything]
    floor = str(cfg.report.floor) if cfg.report.floor else None
    pool = [r for r in results if r.method not in own]   # those explaining this checkpoint
    candidates = [r for r in pool if r.method != floor] or pool
    notes = [f"Checkpoint {checkpoint} (sha256 {checkpoint_hash}); units = (image, foreground class) "
             "pairs with ground truth and target pixels (docs/metrics.md)."]
    own_notes = [f"{label(m)} explains a model of its own, {row.checkpoint} (sha256 {row.checkpoint_hash}; its "
                 f"overrides: {', '.join(row.overrides)}): its units are that model's, its sanity values that "
                 "model's sanity run's; a row beside the others, never chosen." for m, row in own.items()]
    notes += own_notes
    skipped = sorted({k for r in results for k in r.metrics if k.startswith("skipped/")})
    if skipped:
        notes.append("Skipped units: " + ", ".join(
            f"{k.split('/', 1)[1]} {int(results[0].metrics.get(k, 0))}" for k in skipped) + f" ({label(results[0].method)}).")
    if missing:
        notes.append(f"Not evaluated for this checkpoint: {', '.join(missing)}.")
    table = build_table1(results, caption="Table I: plausibility and faithfulness of CAM methods", notes=notes)
    if nothing_explained(pool):
        return _no_method(cfg, table, checkpoint, checkpoint_hash)
    checked = {r.method: r for r in _table3_results(pool, sanity_run(experiment_id, checkpoint_hash))}
    for m, row in own.items():
        checked[m] = _table3_results([row.result], sanity_run(experiment_id, row.checkpoint_hash))[0]
    trust = [checked[r.method] for r in results]
    rule = "Table I" if cfg.report.choose_by == "table1" else "Table III"
    if cfg.report.choose_by == "table1":
        winner, wins = choose_method(build_table1(candidates), candidates)
    else:
        pool = [r for r in trust if r.method != floor] or trust
        winner, wins = choose_method(build_table3(pool), pool)
    chosen_note = (f"Chosen method: {label(winner)} by {rule}'s rule (report.choose_by={cfg.report.choose_by}; "
                   f"wins {wins[winner]} column(s); ties: best mean rank, then table order"
                   + (f"; {label(floor)} is the floor, never chosen" if floor in found else "") + ").")
    table.notes.append(chosen_note)
    statements = _trust_statements(cfg, winner, trust, floor)
    table.notes += statements
    tables_dir = Path(cfg.paths.tables_dir)
    paths = write_table(table, tables_dir, "table1")
    verdicts = {r.method: sanity_verdict(r.metrics, float(cfg.report.sanity_max_abs_rho)) for r in trust}
    shortfall = ({r.method: floor_shortfalls(r.metrics, next(t.metrics for t in trust if t.method == floor))
                  for r in trust if r.method != floor} if floor in found else {})
    if any(k in r.metrics for r in trust for k in ("deletion", "insertion", "pointing", "final_ssim")):
        paths += _write_table3(cfg, trust, everything, checkpoint_hash, [*own_notes, chosen_note, *statements],
                               verdicts, shortfall)
    write_json(tables_dir / CHOSEN, {"method": winner, "label": label(winner), "wins": wins,
                                     "choose_by": str(cfg.report.choose_by),
                                     "sanity_pass": verdicts.get(winner),
                                     "beats_floor": (not shortfall[winner]) if winner in shortfall else None,
                                     "checkpoint": str(checkpoint), "checkpoint_hash": checkpoint_hash,
                                     "runs": {r.method: r.run_id for r in results}})
    for path in [*paths, tables_dir / CHOSEN]:
        mlflow.log_artifact(str(path), artifact_path="tables")
    figures = [_table1_chart(cfg, table, results), *_methods_figure(cfg, results, checkpoint_hash)]
    for path in figures:
        mlflow.log_artifact(str(path), artifact_path="figures")
    mlflow.set_tags({"chosen_method": winner, "checkpoint": str(checkpoint), "checkpoint_hash": checkpoint_hash})
    log.info("Table I (%d methods) -> %s; chosen method: %s; figures: %s", len(results), paths[0], winner,
             ", ".join(p.name for p in figures))
    return ({"units": max(r.metrics.get("units", 0.0) for r in results)}
            | {f"wins/{m}": float(n) for m, n in wins.items()})


def pipeline_stop(cfg: DictConfig, metrics: dict[str, float]) -> str | None:
    """Why `stage=all` must not go on after this report: no method was chosen, so augment has no
    explanation to draw or rank with, and a model that predicts no foreground proposes no region."""
    if metrics.get("units") != 0:
        return None
    cause = (f"the model predicts none of the foreground classes that split '{cfg.xai.split}' holds"
             if cfg.xai.target == "pred" else f"split '{cfg.xai.split}' holds no foreground")
    return (f"every method explained 0 units ({cause}), so Table I chose no method and there is no "
            "explanation for the review sheets and the cam rankers; augment and retrain were not run. Train "
            "longer (train.epochs), or check the data and labels")


def nothing_explained(results: list[MethodResult]) -> bool:
    """Every method's evaluate run counted 0 units: there is nothing to rank and no method whose
    explanations could propose annotations (an undertrained model that predicts no foreground)."""
    return bool(results) and all(r.metrics.get("units") == 0 for r in results)


def _no_method(cfg: DictConfig, table, checkpoint: Path, checkpoint_hash: str) -> dict[str, float]:
    """Table I with a note that no method is chosen and why; no chosen_method.json (an older one
    is removed, as the augment stage would use it) and no chart of empty panels."""
    reason = (f"No method is chosen: every method explained 0 units on split '{cfg.xai.split}' (a unit needs "
              f"ground-truth pixels of a class and pixels of its target mask, xai.target={cfg.xai.target}"
              + (": the model's prediction" if cfg.xai.target == "pred" else "") + "). There is nothing to "
              "rank and no explanation to propose annotations with. If the model predicts no foreground "
              "(skipped units 'in_gt_not_predicted'), train longer (train.epochs) or check the data and labels.")
    table.notes.append(reason)
    tables_dir = Path(cfg.paths.tables_dir)
    paths = write_table(table, tables_dir, "table1")
    stale = tables_dir / CHOSEN
    if stale.is_file():
        stale.unlink()
        log.warning("removed %s: it named a method chosen for another report", stale)
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="tables")
    mlflow.set_tags({"chosen_method": "none", "checkpoint": str(checkpoint), "checkpoint_hash": checkpoint_hash})
    log.warning("Table I -> %s: %s", paths[0], reason)
    return {"units": 0.0}


def _table3_results(results: list[MethodResult], sanity) -> list[MethodResult]:
    """Each method's evaluate metrics merged with the sanity run's values at full randomisation
    (NaN = undefined for every unit; absent = the method was not checked)."""
    checked = set(sanity.data.tags.get("sanity_methods", "").split(",")) if sanity else set()
    out = []
    for r in results:
        metrics = {k: r.metrics[k] for k in ("deletion", "insertion", "pointing", "units") if k in r.metrics}
        if r.method in checked:
            for key in ("final_rho", "final_abs_rho", "final_ssim"):
                metrics[key] = sanity.data.metrics.get(f"{key}/{r.method}", float("nan"))
        out.append(replace(r, metrics=metrics))
    return out


def _trust_statements(cfg: DictConfig, winner: str, trust: list[MethodResult], floor: str | None) -> list[str]:
    """What the report must say about the chosen method: sanity check and the Random-CAM floor."""
    threshold = float(cfg.report.sanity_max_abs_rho)
    mine = next(r.metrics for r in trust if r.method == winner)
    out = []
    verdict = sanity_verdict(mine, threshold)
    if "final_ssim" not in mine:
        out.append(f"{label(winner)} has no sanity check for this checkpoint (run stage=sanity).")
    elif verdict is None:
        out.append(f"{label(winner)}: the sanity correlation at full randomisation is undefined (its maps are "
                   "constant for every unit), so it cannot be said to pass the sanity check.")
    elif not verdict:
        out.append(f"WARNING: the chosen method {label(winner)} FAILS the sanity check: mean |ρ| "
                   f"{mine['final_abs_rho']:.3f} >= {threshold} at full randomisation (its maps do not depend "
                   "enough on the model's weights).")
    else:
        out.append(f"{label(winner)} passes the sanity check (mean |ρ| {mine['final_abs_rho']:.3f} < {threshold}).")
    base = next((r.metrics for r in trust if r.method == floor), None)
    if winner == floor:
        pass
    elif base is None:
        out.append(f"{label(floor or 'Random-CAM')} was not evaluated for this checkpoint: the floor is unknown.")
    elif any(k in base for k in FLOOR_KEYS):
        short = floor_shortfalls(mine, base)
        if short:
            out.append(f"WARNING: the chosen method {label(winner)} does not beat {label(floor)} on "
                       + ", ".join(f"{k} ({_fmt(mine.get(k))} vs {_fmt(base.get(k))})" for k in short) + ".")
        else:
            out.append(f"{label(winner)} beats {label(floor)} on deletion, insertion and pointing.")
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _write_table3(cfg, trust, evaluated, checkpoint_hash, closing_notes, verdicts, shortfall) -> list[Path]:
    """Table III (md/csv/tex) and the deletion / insertion curves of every method in one figure
    (`evaluated`: each row's evaluate run, an own-model method's included)."""
    runs = {m: MlflowClient().get_run(r.run_id) for m, r in evaluated.items() if r.run_id}
    any_run = next(iter(runs.values()), None)
    steps = any_run.data.tags.get("deletion_steps", "?") if any_run else "?"
    radius = any_run.data.tags.get("pointing_radius", "?") if any_run else "?"
    devices = sorted({r.data.tags.get("metrics_device", "?") for r in runs.values()})
    sanity = sanity_run(mlflow.active_run().info.experiment_id, checkpoint_hash)
    threshold = float(cfg.report.sanity_max_abs_rho)
    notes = [
        f"Deletion / Insertion AUC: area under conf_c(x') / conf_c(x) against the share of pixels blurred / "
        f"restored (S = {steps} steps, blur sigma = W/20 unless set), in % of conf_c(x). Pointing: % of units "
        f"whose map peak lies within r = {radius} px of G_c. Units: (image, foreground class) pairs averaged.",
        "Sanity abs(ρ) (mean of |ρ|), ρ, SSIM: unitless, means over the sanity check's units at full randomisation "
        + (f"({int(sanity.data.metrics.get('units', 0))} units); " if sanity else "(not run for this checkpoint); ")
        + f"'undefined' = constant maps for every unit; a method passes when |ρ| < {threshold}.",
        f"Devices: evaluate on {', '.join(devices)}"
        + (f"; sanity check on {sanity.data.tags.get('device', '?')}." if sanity else "."),
    ]
    unchecked = [label(r.method) for r in trust if "final_ssim" not in r.metrics]
    if sanity and unchecked:
        notes.append(f"Not in the sanity run (sanity.methods): {', '.join(unchecked)}.")
    failing = [label(m) for m, v in verdicts.items() if v is False]
    undefined = [label(m) for m, v in verdicts.items() if v is None and "final_ssim" in
                 next(r.metrics for r in trust if r.method == m)]
    if failing:
        notes.append(f"Fail the sanity check (|ρ| >= {threshold}): {', '.join(failing)}.")
    if undefined:
        notes.append(f"Sanity correlation undefined: {', '.join(undefined)}.")
    losers = [label(m) for m, short in shortfall.items() if short]
    if losers:
        notes.append(f"Do not beat {label(cfg.report.floor)} on deletion, insertion and pointing alike: "
                     + ", ".join(losers) + ".")
    notes += closing_notes
    table = build_table3(trust, notes=notes)
    paths = write_table(table, Path(cfg.paths.tables_dir), "table3")
    curves = {}
    for method, run in runs.items():
        kinds = {k: [m.value for m in sorted(MlflowClient().get_metric_history(run.info.run_id, f"{k}_curve"),
                                             key=lambda m: m.step)] for k in ("deletion", "insertion")}
        if any(kinds.values()):
            curves[label(method)] = kinds
    if curves:
        paths.append(save_curves_figure(Path(cfg.report.figures_dir) / "table3_deletion_insertion.png", curves,
                                        title="Deletion and insertion, mean over units, per method"))
    log.info("Table III -> %s", paths[0])
    return paths


def _table1_chart(cfg: DictConfig, table, results: list[MethodResult]) -> Path:
    """Table I as bars: one panel per metric with its ↑/↓, one bar per method, the best dark."""
    ranked = {c.key: c.better is not None for c in table.columns}
    columns = [(c.key, c.label, ranked.get(c.key, False), c.digits) for c in METRICS]
    return save_table_chart(Path(cfg.report.figures_dir) / "table1_chart.png", [label(r.method) for r in results],
                            columns, {label(r.method): r.metrics for r in results},
                            {key: table.best(key) for key, _, rank, _ in columns if rank},
                            title=f"Table I: plausibility (EBPG, Bbox, IoU) and faithfulness (Drop, Inc) per "
                                  f"CAM method ({cfg.experiment_name})")


def _methods_figure(cfg: DictConfig, results: list[MethodResult], checkpoint_hash: str) -> list[Path]:
    """The paper's Fig. 3 from the methods' saved maps (those explaining this checkpoint): one
    image per class, every method's map."""
    maps_dir = Path(cfg.xai.maps_dir)
    current = [r for r in results if (maps_dir / r.method / META).is_file()
               and read_meta(maps_dir / r.method).get("checkpoint_hash") == checkpoint_hash]
    rows = methods_rows(cfg.data.processed_dir, str(cfg.xai.split), maps_dir,
                        [(r.method, label(r.method)) for r in current]) if current else []
    if not rows:
        log.info("no image has maps of every method for any class: no methods figure")
        return []
    return [save_methods_figure(Path(cfg.report.figures_dir) / "methods_per_image.png", rows,
                                title=f"Every CAM method on the same image, one row per class "
                                      f"(split '{cfg.xai.split}', {cfg.experiment_name}; as the paper's Fig. 3)")]
