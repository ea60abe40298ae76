"""Mixed precision against float32 on a trained checkpoint: speed and parity, in one process.

    python scripts/bench_precision.py --checkpoint outputs/checkpoints/demo/baseline/best.pt \
        --processed data/processed/<folder> --split test --dtype float16 [--device cuda]

For the split's images (--images at most): the test IoU (confusion matrix against the annotation,
Overall = mean of the foreground classes) of the float32 prediction and of the prediction under
--dtype autocast, their difference in points (goal: within 0.1) and the share of pixels whose
class changed; then per method the maps' largest and mean absolute difference from the float32
maps (the same units: the float32 prediction's classes that the annotation holds) and the time of
each. Autocast runs on --device as `xai.amp=true` / `test.amp=true` run it on CUDA; on the CPU
this measures the number format's effect (CPU kernels), not the CUDA path's speed.
"""
from __future__ import annotations

import argparse
import time

import torch

from vqi.classes import CLASS_NAMES
from vqi.xai.catalogue import xai_catalogue
from vqi.data.dataset import SegmentationDataset
from vqi.data.transforms import eval_transform
from vqi.engine.confusion import ConfusionMatrix
from vqi.engine.precision import AMP_DTYPES, amp_dtype
from vqi.engine.prediction import predicted_classes
from vqi.models.checkpoint import load_model
from vqi.xai.targets import Unit, model_logits, select_units

METHODS = {name: m for name, m in xai_catalogue().items() if m.standalone}
"""The methods a model and a layer alone build (conf/xai/<name>.yaml: class and options)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--processed", required=True, help="a prepared data folder (data.processed_dir)")
    p.add_argument("--split", default="test")
    p.add_argument("--size", type=int, default=None, help="model input size (default: the checkpoint's)")
    p.add_argument("--dtype", choices=sorted(AMP_DTYPES), default="float16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--map-images", type=int, default=10, help="images whose maps are compared")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--layer", default=None, help="target layer (default: the checkpoint's)")
    args = p.parse_args()
    device = torch.device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    config = ckpt.get("config") or {}
    size = args.size or int(config["data"]["image_size"])
    layer = args.layer or config["model"]["target_layer"]
    dataset = SegmentationDataset(args.processed, args.split, eval_transform(size))
    count = min(len(dataset), args.images)
    low = amp_dtype(args.dtype)
    print(f"{args.checkpoint}: {count} {args.split} images at {size} px on {device}, {args.dtype} autocast vs float32")

    matrices = {"float32": ConfusionMatrix(len(CLASS_NAMES)), args.dtype: ConfusionMatrix(len(CLASS_NAMES))}
    seconds = {name: 0.0 for name in matrices}
    changed, pixels, samples = 0, 0, []
    with torch.no_grad():
        for i in range(count):
            image, gt, _ = dataset[i]
            image = image[None].to(device)
            model_logits(model, image)   # warm
            ref, t_ref = timed(lambda: predicted_classes(model_logits(model, image)), device)
            with torch.autocast(device.type, dtype=low):
                model_logits(model, image)
                mixed, t_low = timed(lambda: predicted_classes(model_logits(model, image)), device)
            matrices["float32"].update(gt[None], ref.cpu())
            matrices[args.dtype].update(gt[None], mixed.cpu())
            seconds["float32"] += t_ref
            seconds[args.dtype] += t_low
            changed += int((ref != mixed).sum())
            pixels += ref.numel()
            if i < args.map_images:
                units = [Unit(0, c, mask) for c, mask in select_units(gt.to(device), ref[0], "pred")[0]]
                if units:
                    samples.append((image, units))
    overall = {name: 100 * m.metrics()["iou_overall"] for name, m in matrices.items()}
    print(f"test Overall IoU: float32 {overall['float32']:.2f}%, {args.dtype} {overall[args.dtype]:.2f}% "
          f"(difference {overall[args.dtype] - overall['float32']:+.2f} points, goal within 0.1); "
          f"{100 * changed / pixels:.3f}% of pixels changed class; forward {seconds['float32'] / count:.4f} s vs "
          f"{seconds[args.dtype] / count:.4f} s per image ({seconds['float32'] / seconds[args.dtype]:.2f}x)")
    units = sum(len(u) for _, u in samples)
    print(f"maps of {units} units on {len(samples)} images ({layer}):")
    for name in args.methods:
        cam = METHODS[name].build(model, layer)
        worst, total, values, t32, t16 = 0.0, 0.0, 0, 0.0, 0.0
        for image, units_of in samples:
            ref, t_ref = timed(lambda: cam(image, units_of).detach().float(), device)
            with torch.autocast(device.type, dtype=low):
                mixed, t_low = timed(lambda: cam(image, units_of).detach().float(), device)
            gap = (ref - mixed).abs()
            worst, total, values = max(worst, float(gap.max())), total + float(gap.sum()), values + gap.numel()
            t32, t16 = t32 + t_ref, t16 + t_low
        print(f"  {name:<10} max {worst:.4f} mean {total / values:.5f} | {t32 / len(samples):.3f} s vs "
              f"{t16 / len(samples):.3f} s per image ({t32 / t16:.2f}x)")


if __name__ == "__main__":
    main()
