"""Benchmark: does `vqi.models.sparse_conv.tap_sparse` still pay where explain and evaluate use it?

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_sparse_conv.py
    ... --archs lraspp_mobilenet_v3_large deeplabv3_resnet50 --size 160 --repeats 5

Per model (random weights, eval mode, 1 thread unless --threads): how many convolutions
`tap_sparse` changes, then the median time (--repeats, interleaved with/without so the machine's
load hits both alike) of Grad-CAM maps (one forward + one VJP per class, the fast engine), of
Score-CAM maps (--scorecam) and of deletion / insertion curves (vqi.metrics.deletion.curves,
--steps), each with `tap_sparse` in place and with it replaced by a no-op in the same process;
the ratio without / with (> 1: tap_sparse faster) and the largest difference of the outputs.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import vqi.metrics.deletion as deletion
import vqi.xai.base as base
import vqi.xai.scorecam as scorecam
from vqi.models.factory import build_model
from vqi.models.sparse_conv import tap_sparse
from vqi.xai.gradcam import GradCAM
from vqi.xai.scorecam import ScoreCAM
from vqi.xai.targets import Unit

LAYERS = {"lraspp_mobilenet_v3_large": "backbone.15", "deeplabv3_mobilenet_v3_large": "backbone.16",
          "deeplabv3_resnet50": "backbone.layer4", "deeplabv3_resnet101": "backbone.layer4"}
SITES = (base, scorecam, deletion)   # modules that import tap_sparse by name


@contextlib.contextmanager
def _off(model, *args, **kwargs):
    yield 0


def switch(on: bool) -> None:
    for module in SITES:
        module.tap_sparse = tap_sparse if on else _off


def timed(fn, repeats: int) -> tuple[dict[bool, float], dict[bool, torch.Tensor]]:
    times: dict[bool, list[float]] = {True: [], False: []}
    outs: dict[bool, torch.Tensor] = {}
    for on in (True, False):   # warm-up
        switch(on)
        fn()
    for i in range(repeats):
        for on in ((True, False) if i % 2 == 0 else (False, True)):   # alternate which goes first
            switch(on)
            start = time.perf_counter()
            outs[on] = fn()
            times[on].append(time.perf_counter() - start)
    switch(True)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
    parser.add_argument("--size", type=int, default=160, help="image side (the demo's: 160)")
    parser.add_argument("--images", type=int, default=2, help="images per Grad-CAM call")
    parser.add_argument("--steps", type=int, default=10, help="deletion steps (the demo's metrics.deletion_steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scorecam", action="store_true", help="time Score-CAM too (slow: a pass per channel)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"size {args.size}, {args.images} images, {args.steps} deletion steps, {args.repeats} repeats, "
          f"{torch.get_num_threads()} thread(s); ratio = time without / time with tap_sparse")
    for arch in args.archs:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=5).eval()
        images = torch.rand(args.images, 3, args.size, args.size)
        with torch.no_grad(), tap_sparse(model) as changed:
            pred = model(images)["out"].argmax(1)
        classes = sorted(int(c) for c in pred.unique())[:2]
        units = [Unit(i, c, pred[i] == c) for i in range(args.images) for c in classes]
        print(f"\n== {arch}: tap_sparse changes {changed} conv layer(s); {len(units)} units")
        cam = GradCAM(model, LAYERS[arch])
        rows = [("gradcam maps", lambda: cam(images, units))]
        if args.scorecam:
            score = ScoreCAM(model, LAYERS[arch], 16)
            rows.append(("scorecam maps", lambda: score(images[:1], [u for u in units if u.index == 0])))
        one = [u for u in units if u.index == 0]
        maps = cam(images[:1], one)
        masks = torch.stack([u.mask for u in one])
        rows.append(("deletion curves", lambda: torch.cat([*deletion.curves(
            model, images[0], maps, [u.class_id for u in one], masks, steps=args.steps)]).nan_to_num()))
        for name, fn in rows:
            t, outs = timed(fn, args.repeats)
            delta = (outs[True] - outs[False]).abs().max().item()
            print(f"{name:<16} with {t[True]:.3f} s  without {t[False]:.3f} s  ratio {t[False] / t[True]:.2f}  "
                  f"max |diff| {delta:.2e}")


if __name__ == "__main__":
    main()
