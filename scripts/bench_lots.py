"""Benchmark: LOTS against HiResCAM on one image, the same model and units, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lots.py            # the demo's setting (CPU)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lots.py --steps 5  # fewer LOTS steps

The demo's model (LR-ASPP MobileNetV3-Large, random weights, --classes outputs) on one random
--size image; units are horizontal bands of classes 1..U, for U = 1 and U = 4. Prints the median
of --repeats for each method and U, wall clock and the process's CPU time (with one thread, what
the call costs a core even on a busy machine), LOTS / HiResCAM, and how many forward passes LOTS
ran to the target layer (1 for the origin + one per step, per batch of units; fewer when units
converge).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vqi.models.factory import build_model
from vqi.xai.hirescam import HiResCAM
from vqi.xai.lots import LOTS
from vqi.xai.targets import Unit


def bands(units: int, size: int) -> list[Unit]:
    """`units` units of one image: class k's target mask is the k-th of `units` horizontal bands."""
    rows = torch.arange(size)[:, None].expand(size, size)
    return [Unit(0, k + 1, (rows * units // size) == k) for k in range(units)]


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--layer", default="backbone.15")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = build_model(arch="lraspp_mobilenet_v3_large", num_classes=args.classes, weights=None,
                        weights_backbone=None).eval()
    image = torch.randn(1, 3, args.size, args.size)
    hirescam = HiResCAM(model, args.layer)
    lots = LOTS(model, args.layer, steps=args.steps, tolerance=args.tolerance)
    passes = []
    handle = lots.layer.register_forward_hook(lambda *a: passes.append(1))
    print(f"threads {torch.get_num_threads()}, {args.size}x{args.size}, layer {args.layer}, LOTS steps {args.steps}")
    for count in (1, 4):
        units = bands(count, args.size)
        hirescam(image, units)   # warm
        (reference, reference_cpu) = median_seconds(lambda: hirescam(image, units), args.repeats)
        passes.clear()
        (seconds, cpu) = median_seconds(lambda: lots(image, units), args.repeats)
        print(f"{count} unit(s): HiResCAM {reference:.3f} s (CPU {reference_cpu:.3f} s), LOTS {seconds:.3f} s "
              f"(CPU {cpu:.3f} s), LOTS / HiResCAM {seconds / reference:.1f}x (CPU {cpu / reference_cpu:.1f}x); "
              f"LOTS forward passes to the layer per call: {len(passes) // args.repeats}")
    handle.remove()


if __name__ == "__main__":
    main()
