"""stage=sanity: the cascading model-randomisation check of every method of `sanity.methods`
(docs/metrics.md, "Trusting the explanations").

Config keys read: `seed`, `device`, `data.processed_dir`, `xai.{checkpoint, target, transform}`
and each method's `xai/<name>.yaml`, `sanity.{methods, split, max_images, batch_size, seed, table,
output_dir, figures_dir, progress}`, `paths.tables_dir`. Units and T_c come from the trained model
(first `max_images` images of the split) and stay fixed; after each cascade step (head, ASPP,
backbone blocks from the top) every method's maps are recomputed and compared with the trained
ones. Writes `<output_dir>/sanity.json`, `<tables_dir>/<table>.{md,csv,tex}`, a figure of rho
against step (one line per method); logs `rho|abs_rho|ssim/<method>` as histories (step i = after
cascade step i) and `final_<that>/<method>` at full randomisation. Undefined correlations (constant
maps) are counted in `undefined/<method>` and never logged as numbers.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from hydra.utils import instantiate
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from vqi.utils.progress import progress

from vqi.config import build_cam, with_xai_method
from vqi.data.dataset import SegmentationDataset
from vqi.metrics import sanity
from vqi.models.checkpoint import load_model
from vqi.reporting.charts import save_lines_figure
from vqi.reporting.table1 import label
from vqi.reporting.tables import Column, Table, write_table
from vqi.utils.atomic import write_json
from vqi.utils.device import device_name, resolve_device
from vqi.utils.seed import seed_everything
from vqi.xai.base import GradientCAM, gradient_maps
from vqi.xai.maps import file_hash
from vqi.xai.targets import Unit, model_logits, select_units
from vqi.engine.prediction import predicted_classes

log = logging.getLogger(__name__)

SUMMARY = ("rho", "abs_rho", "ssim")


def run_name(cfg: DictConfig) -> str:
    return f"sanity-{cfg.experiment_name}"


def inputs(cfg: DictConfig) -> list[Path]:
    return [Path(cfg.xai.checkpoint), Path(cfg.data.processed_dir) / "annotations" / f"{cfg.sanity.split}.json"]


def _batches(cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> list[tuple[torch.Tensor, list[Unit]]]:
    """The images to check, in batches, with their units (T_c from the trained model)."""
    sc = cfg.sanity
    dataset = SegmentationDataset(cfg.data.processed_dir, sc.split, instantiate(cfg.xai.transform))
    count = len(dataset) if sc.max_images is None else min(len(dataset), int(sc.max_images))
    out = []
    for start in range(0, count, int(sc.batch_size)):
        items = [dataset[i] for i in range(start, min(count, start + int(sc.batch_size)))]
        images = torch.stack([it[0] for it in items]).to(device)
        with torch.no_grad():
            preds = predicted_classes(model_logits(model, images))
        units = [Unit(n, c, mask) for n, it in enumerate(items)
                 for c, mask in select_units(it[1].to(device), preds[n], cfg.xai.target)[0]]
        if units:
            out.append((images, units))
    return out


def _all_maps(methods: dict[str, object], batches) -> dict[str, np.ndarray]:
    """{method: all units' maps}, gradient methods sharing one forward pass and its VJPs."""
    grads = [m for m in methods.values() if isinstance(m, GradientCAM)]
    maps: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    for images, units in batches:
        shared = gradient_maps(grads, images, units) if grads else {}
        for name, method in methods.items():
            m = shared[method.name] if isinstance(method, GradientCAM) else method(images, units)
            maps[name].append(m.detach().cpu().numpy().astype(np.float32))
    return {name: np.concatenate(v) for name, v in maps.items()}


def run(cfg: DictConfig) -> dict[str, float]:
    sc = cfg.sanity
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    model, _ = load_model(cfg.xai.checkpoint, device)
    names = list(sc.methods)
    methods = {n: build_cam(with_xai_method(cfg, n), model) for n in names}
    for n, m in methods.items():   # gradient_maps keys by the class's name: make it the config's
        m.name = n
    batches = _batches(cfg, model, device)
    if not batches:
        raise ValueError(f"sanity: no unit in the first {sc.max_images} images of split {sc.split!r}")
    t0 = time.perf_counter()
    trained = _all_maps(methods, batches)
    steps = sanity.cascade_steps(model)
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for i, (step, modules) in enumerate(progress(steps, desc="sanity", disable=not sc.progress)):
        sanity.randomise(modules, int(sc.seed) + i)
        now = _all_maps(methods, batches)
        for n in names:
            results[n].append(sanity.summarise(sanity.spearman(trained[n], now[n]), sanity.ssim(trained[n], now[n])))
    seconds = time.perf_counter() - t0
    checkpoint_hash = file_hash(cfg.xai.checkpoint)
    labels = [s for s, _ in steps]
    units = int(sum(len(u) for _, u in batches))
    write_json(Path(sc.output_dir) / "sanity.json", {
        "checkpoint": str(cfg.xai.checkpoint), "checkpoint_hash": checkpoint_hash, "device": device_name(device),
        "split": sc.split, "units": units, "steps": labels, "seconds": seconds, "methods": results})
    table = _table(names, labels, results, units, checkpoint_hash, device_name(device), seconds)
    paths = write_table(table, Path(cfg.paths.tables_dir), str(sc.table))
    figure = save_lines_figure(Path(sc.figures_dir) / "sanity_rho.png", ["trained", *labels],
                               {label(n): [1.0] + [r["rho"] for r in results[n]] for n in names},
                               ylabel="mean Spearman ρ vs trained", hline=0.0,
                               title="Cascading randomisation: head first, then down the backbone")
    for path in [*paths, figure, Path(sc.output_dir) / "sanity.json"]:
        mlflow.log_artifact(str(path), artifact_path="sanity")
    stamp = int(time.time() * 1000)
    history = [Metric(f"{k}/{n}", r[k], stamp, i) for n in names for i, r in enumerate(results[n])
               for k in SUMMARY if np.isfinite(r[k])]
    MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=history)
    mlflow.set_tags({"checkpoint": str(cfg.xai.checkpoint), "checkpoint_hash": checkpoint_hash,
                     "device": device_name(device), "sanity_methods": ",".join(names),
                     "sanity_steps": ",".join(labels)})
    log.info("sanity check: %d units, %d steps, %.1f s\n%s", units, len(steps), seconds, table.markdown())
    out: dict[str, float] = {"units": float(units), "seconds": seconds}
    for n in names:
        final = results[n][-1]
        out.update({f"final_{k}/{n}": final[k] for k in SUMMARY})   # NaN (undefined) is not logged
        out[f"undefined/{n}"] = final["undefined"]
    return out


def _table(names, labels, results, units, checkpoint_hash, device, seconds) -> Table:
    columns = [Column("rho", "ρ", missing="undefined"), Column("abs_rho", "abs(ρ)", missing="undefined"), Column("ssim", "SSIM"),
               Column("undefined", "Undefined ρ (units)", digits=0)]
    table = Table("Method @ step", columns, caption="Sanity check: trained vs cascading-randomised maps")
    for n in names:
        for step, r in zip(labels, results[n]):
            table.rows.append((f"{label(n)} @ {step}", r))
    table.notes += [
        f"Means over {units} units (image, foreground class) of the trained checkpoint (sha256 {checkpoint_hash}); "
        "T_c from the trained model. ρ: Spearman rank correlation, unitless in [-1, 1], over the units where both "
        "maps vary; abs(ρ): mean of its absolute value |ρ|; SSIM unitless (11x11 Gaussian window, range 1).",
        "Undefined ρ: units whose trained or randomised map is constant (no ranking); 'undefined' = so for every unit.",
        "Steps are cumulative: each row re-initialises its modules on top of every row above it.",
        f"Computed on {device} in {seconds:.1f} s (all methods, all steps).",
    ]
    return table
