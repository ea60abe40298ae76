"""Benchmark: `stage=augment` seconds per image beside `stage=explain` seconds per image, same
method, images and checkpoint, in one process.

    python scripts/bench_augment.py                       # the acceptance setting: 160 and 500 px
    python scripts/bench_augment.py --sizes 160 --images 8

For each size: the generated data set (`data=synthetic`, `--images` images of `size` px, prepared at
`size`) under --work, and a random-weight checkpoint of --arch with BatchNorm statistics of the
train images and its cable bias shifted so that about a third of the pixels are predicted cable
(a random head predicts one class everywhere, which would leave nothing to explain or propose). Then, on the augment split (`train`):

- explain: `stage=explain` of --method; its time per image is the stage's own (the map
  computation of each batch / its images, explain.json), also its wall clock per image;
- augment: `stage=augment` with the same method (threshold policy, `augment.force=true`), wall
  clock of the whole stage per image: prediction, maps, proposals, review panels, apply,
  label-quality scores.

Each stage runs --repeats times, alternating, and the fastest run counts. Prints both, the ratio
augment / explain (goal <= 2), augment / explain's wall clock, proposals per image and the review
sheets' kilobytes per image.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from vqi import tracking
from vqi.classes import CLASS_NAMES
from vqi.config import compose_config
from vqi.data.dataset import SegmentationDataset
from vqi.data.transforms import eval_transform
from vqi.models.checkpoint import save_checkpoint
from vqi.models.factory import build_model
from vqi.stages import augment, explain, prepare


def in_run(cfg, stage) -> dict:
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    with mlflow.start_run(experiment_id=experiment_id):
        return stage.run(cfg)


def output_bias(model: torch.nn.Module) -> torch.Tensor:
    """The bias every output logit gets: DeepLabv3's last conv, or LR-ASPP's low-level classifier
    (its two classifiers' outputs are summed)."""
    head = model.classifier
    return (head.low_classifier if hasattr(head, "low_classifier") else head[-1]).bias


def cable_checkpoint(processed: Path, size: int, arch: str, path: Path) -> float:
    """A random-weight `arch`, its BatchNorm statistics taken from the train images (no gradient
    step: else the random features vanish), its cable bias set so that ~1/3 of the pixels are
    predicted cable; returns that share."""
    torch.manual_seed(0)
    config = {"arch": arch, "num_classes": len(CLASS_NAMES), "weights": None,
              "weights_backbone": None, "aux_loss": False}
    model = build_model(**config)
    images = torch.stack([img for img, _, _ in SegmentationDataset(processed, "train", eval_transform(size))][:8])
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None          # a plain average over the batch
    with torch.no_grad():
        model.train()(images)
        logits = model.eval()(images)["out"]
        margin = logits[:, 1] - logits[:, [0, 2, 3, 4]].max(dim=1).values
        output_bias(model)[1] -= margin.flatten().quantile(0.65)
        share = float((model(images)["out"].argmax(1) == 1).float().mean())
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "class_names": list(CLASS_NAMES),
                     "model_config": config}, path)
    return share


def bench(size: int, args: argparse.Namespace, work: Path) -> None:
    root = work / f"s{size}"
    base = [f"paths.output_dir={root}/outputs", f"paths.data_dir={root}/data", "data=synthetic",
            f"data.generator.num_images={args.images}", f"data.generator.size={size}",
            f"data.image_size={size}", f"model={args.arch}", f"device={args.device}", f"seed={args.seed}"]
    cfg = compose_config(base + ["stage=prepare"])
    if not (Path(cfg.data.processed_dir) / "annotations" / "train.json").is_file():
        in_run(cfg, prepare)
    processed = Path(cfg.data.processed_dir)
    ckpt = root / "random.pt"
    share = cable_checkpoint(processed, size, args.arch, ckpt)
    images = len(json.loads((processed / "annotations" / "train.json").read_text())["images"])

    explain_cfg = compose_config(base + ["stage=explain", f"xai={args.method}", f"xai.checkpoint={ckpt}",
                                         "xai.split=train", f"xai.batch_size={args.batch}", "xai.figures=0",
                                         "xai.progress=false"])
    augment_cfg = compose_config(base + ["stage=augment", f"augment.method={args.method}",
                                         f"augment.checkpoint={ckpt}", f"augment.batch_size={args.batch}",
                                         "augment.policy=threshold", "augment.force=true"])
    runs = {"explain": [], "explain_wall": [], "augment": []}
    for _ in range(args.repeats):   # alternating, so a busy moment of the machine hits both alike
        t0 = time.perf_counter()
        in_run(explain_cfg, explain)
        runs["explain_wall"].append((time.perf_counter() - t0) / images)
        meta = json.loads((Path(explain_cfg.xai.maps_dir) / args.method / "explain.json").read_text())
        runs["explain"].append(statistics.fmean(m["seconds"] for m in meta["images"].values()))
        shutil.rmtree(Path(augment_cfg.augment.review_dir) / "panels", ignore_errors=True)   # its own sheets only
        t0 = time.perf_counter()
        metrics = in_run(augment_cfg, augment)
        runs["augment"].append((time.perf_counter() - t0) / images)
    explain_s, explain_wall, augment_s = (min(runs[k]) for k in ("explain", "explain_wall", "augment"))
    cfg = augment_cfg
    sheets = list((Path(cfg.augment.review_dir) / "panels").glob("*.png"))
    panel_kb = sum(p.stat().st_size for p in sheets) / images / 1024
    print(f"{size:>5} {images:>6} {share:>6.2f} {metrics['proposals'] / images:>9.1f} {panel_kb:>9.1f} "
          f"{explain_s:>10.3f} {explain_wall:>10.3f} {augment_s:>10.3f} {augment_s / explain_s:>7.2f}x "
          f"{augment_s / explain_wall:>9.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 500])
    p.add_argument("--images", type=int, default=200, help="generated images (the demo's 200: 130 in the train split)")
    p.add_argument("--arch", default="lraspp_mobilenet_v3_large", help="the demo's model by default")
    p.add_argument("--method", default="hirescam")
    p.add_argument("--batch", type=int, default=4, help="images per forward pass, both stages")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each stage; the fastest counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the stages' `device`)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", default=None, help="data and outputs (default: a temporary folder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.arch} (random weights, cable bias shifted), {args.method}, batch {args.batch}, "
          f"{args.device}, {torch.get_num_threads()} threads")
    print(f"{'size':>5} {'images':>6} {'cable':>6} {'props/img':>9} {'KB/img':>9} "
          f"{'explain s':>10} {'expl wall':>10} {'augment s':>10} {'ratio':>8} {'wall/wall':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for size in args.sizes:
            bench(size, args, work)
    print("explain s: the explain stage's own time per image (maps only); expl wall: its wall clock "
          "per image; augment s: the augment stage's wall clock per image (each the fastest of "
          "--repeats); ratio = augment s / explain s (goal <= 2); wall/wall = augment s / expl wall")


if __name__ == "__main__":
    main()
