"""stage=export: a trained checkpoint as TorchScript, ONNX and ExecuTorch for deployment (the paper's
mobile step; ExecuTorch supersedes the PyTorch Mobile it used).

Reads: `export.checkpoint`, `export.split` of `data.processed_dir` (the parity and IoU images),
`export.output_dir`, `export.formats`, `export.opset`, `export.parity_images`,
`export.parity_tolerance`, `export.latency_runs`, `export.latency_warmup`, `export.threads`,
`export.quantize`, `export.batch_size`, `export.transform`.

Writes `<output_dir>/model.pt` (TorchScript), `model.onnx`, `model.pte` (ExecuTorch, XNNPACK, with
the `mobile` extra) as `export.formats` asks and, with `export.quantize=true`, `model.int8.onnx`;
`export.json` with sizes, latencies, parity and IoU. Each exported model, run in its own runtime,
must match PyTorch within `parity_tolerance` (max abs logit difference) on the split's images, else
the stage fails; the share of pixels whose argmax agrees is reported beside it. Sizes and CPU
latencies are printed and logged; the int8 model's IoU change on the split too.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

import mlflow
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vqi.data.dataset import SegmentationDataset
from vqi.export import checks, formats
from vqi.models.checkpoint import load_model
from vqi.utils.atomic import write_json

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx", "executorch")


class ExportParityError(RuntimeError):
    pass


def run_name(cfg: DictConfig) -> str:
    return f"export-{cfg.experiment_name}-{Path(cfg.export.checkpoint).parent.name}"


def _batches(cfg: DictConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = SegmentationDataset(cfg.data.processed_dir, cfg.export.split, instantiate(cfg.export.transform))
    loader = DataLoader(dataset, batch_size=int(cfg.export.batch_size), shuffle=False, num_workers=0)
    return [(images.numpy(), masks.numpy()) for images, masks, _ in loader]


def _require_executorch() -> None:
    """Fail before any work when `export.formats` asks for ExecuTorch and it is not installed."""
    try:
        import executorch  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError("export.formats has executorch, but ExecuTorch is not installed: "
                                  "pip install -e '.[mobile]' (executorch 1.5, built for torch 2.14), "
                                  "or leave executorch out of export.formats") from err


def run(cfg: DictConfig) -> dict[str, float]:
    exp = cfg.export
    unknown = sorted(set(exp.formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"export.formats: unknown {unknown}; valid: {', '.join(FORMATS)}")
    if "executorch" in exp.formats:
        _require_executorch()
    if exp.quantize and "onnx" not in exp.formats:
        raise ValueError("export.quantize=true quantizes the ONNX model: add onnx to export.formats")
    if exp.threads:
        torch.set_num_threads(int(exp.threads))
    model, ckpt = load_model(exp.checkpoint, "cpu")
    out_dir = Path(exp.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = _batches(cfg)
    limit = None if exp.parity_images is None else max(1, -(-int(exp.parity_images) // int(exp.batch_size)))
    parity_inputs = [images for images, _ in itertools.islice(batches, limit)]
    example = torch.from_numpy(parity_inputs[0][:1])
    reference = checks.torch_runner(model)

    files: dict[str, Path] = {}
    runners = {"pytorch": reference}
    if "torchscript" in exp.formats:
        files["torchscript"] = formats.export_torchscript(model, example, out_dir / "model.pt")
        runners["torchscript"] = checks.torch_runner(torch.jit.load(str(files["torchscript"])).eval())
    if "onnx" in exp.formats:
        files["onnx"] = formats.export_onnx(model, example, out_dir / "model.onnx", int(exp.opset))
        runners["onnx"] = checks.onnx_runner(str(files["onnx"]), exp.threads)
    if "executorch" in exp.formats:
        files["executorch"] = formats.export_executorch(model, example, out_dir / "model.pte")
        runners["executorch"] = checks.executorch_runner(str(files["executorch"]))
    if exp.quantize:
        files["onnx_int8"] = formats.quantize_onnx(files["onnx"], out_dir / "model.int8.onnx")
        runners["onnx_int8"] = checks.onnx_runner(str(files["onnx_int8"]), exp.threads)

    results: dict[str, float] = {}
    for name in FORMATS:
        if name in runners:
            match = checks.parity(reference, runners[name], parity_inputs)
            results[f"{name}_max_abs_diff"] = match.max_abs_diff
            results[f"{name}_argmax_agreement"] = match.argmax_agreement
            if match.max_abs_diff > float(exp.parity_tolerance):
                raise ExportParityError(f"{files[name]}: {name} logits differ from PyTorch by "
                                        f"{match.max_abs_diff:.3g} (max abs) on {exp.split} images, above "
                                        f"export.parity_tolerance={exp.parity_tolerance}")
    for name, path in files.items():
        results[f"{name}_size_mb"] = path.stat().st_size / 2**20
    for name, predict in runners.items():
        results[f"{name}_latency_ms"] = checks.latency_ms(predict, example.numpy(), int(exp.latency_runs),
                                                          int(exp.latency_warmup))
    if exp.quantize:
        names = list(ckpt["class_names"])
        base = checks.split_metrics(runners["onnx"], batches, len(names), names)
        quant = checks.split_metrics(runners["onnx_int8"], batches, len(names), names)
        for key in [k for k in base if k.startswith("iou_")]:
            results[f"fp32_{key}"] = base[key]
            results[f"int8_{key}"] = quant[key]
            results[f"int8_delta_{key}"] = quant[key] - base[key]

    _print(results, files, exp.split, tuple(example.shape))
    write_json(out_dir / "export.json", {"checkpoint": str(exp.checkpoint), "input_shape": list(example.shape),
                                         "files": {k: str(v) for k, v in files.items()}, "results": results})
    mlflow.log_artifact(str(out_dir / "export.json"))
    mlflow.set_tags({"export_dir": str(out_dir), "checkpoint": str(exp.checkpoint)})
    return results


def _print(results: dict[str, float], files: dict[str, Path], split: str, shape: tuple) -> None:
    lines = [f"export: input {list(shape)}"]
    for name, path in files.items():
        lines.append(f"  {name:12s} {results[name + '_size_mb']:8.2f} MB  {path}")
    for key, value in results.items():
        if key.endswith("_latency_ms"):
            lines.append(f"  CPU latency {key[:-11]:12s} {value:9.2f} ms (median, batch 1)")
        elif key.endswith("_max_abs_diff"):
            name = key[:-13]
            lines.append(f"  parity {name:12s} max |logit diff| vs PyTorch {value:.3g}, argmax agreement "
                         f"{100 * results[name + '_argmax_agreement']:.2f}%")
    if "fp32_iou_overall" in results:
        lines.append(f"  {split} Overall IoU fp32 {100 * results['fp32_iou_overall']:.2f}%  int8 "
                     f"{100 * results['int8_iou_overall']:.2f}%  change "
                     f"{100 * results['int8_delta_iou_overall']:+.2f} points")
    log.info("%s", "\n".join(lines))
