"""Benchmark: the fast CAM engine against pytorch-grad-cam on the same model, images and units.

    .venv/bin/python scripts/bench_cam.py                       # the acceptance setting (CPU)
    .venv/bin/python scripts/bench_cam.py --size 128 --repeats 1  # quicker

Part 1, gradient methods (GradCAM, GradCAM++, XGradCAM, HiResCAM) on a random-weight
DeepLabv3-ResNet101 at --size: the library runs one forward + full backward per method and unit;
the fast engine computes all four methods for all units from ONE forward pass and one VJP per
class to `backbone.layer4`. Part 2, ScoreCAM on the small setting (--small-arch at --small-size,
last backbone block): the library runs the channel-masked passes once per unit, the fast engine
once per image. Prints per-method and total times (median of --repeats), ratios, one plain
inference forward for reference (--repeats; the library --library-repeats), peak memory (CPU: VmHWM after resetting it; CUDA: the
allocator's peak), and the max / mean absolute difference of the maps. With --amp, the fast
engine again under that autocast (as `xai.amp=true` runs it on CUDA): its time against float32's
and its maps' difference from the float32 maps.

Units: the classes that the argmax of the model predicts on the input (random weights: inputs
are drawn from --seed on until the prediction holds >= 2 classes, --tries at most); if none does,
the classes of --classes are targeted with horizontal bands as target masks (printed).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from vqi.engine.precision import AMP_DTYPES, amp_dtype
from vqi.models.factory import build_model
from vqi.xai.base import gradient_maps
from vqi.xai.gradcam import GradCAM
from vqi.xai.gradcampp import GradCAMPlusPlus
from vqi.xai.hirescam import HiResCAM
from vqi.xai.library import LibraryCAM
from vqi.xai.scorecam import ScoreCAM
from vqi.xai.targets import Unit, model_logits
from vqi.xai.xgradcam import XGradCAM

GRADIENT = ((GradCAM, "GradCAM"), (GradCAMPlusPlus, "GradCAMPlusPlus"), (XGradCAM, "XGradCAM"),
            (HiResCAM, "HiResCAM"))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[float, float, object]:
    """(median seconds, peak extra MiB of the first call, last result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS") * 1024
    times, out = [], None
    for i in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        if i == 0:
            peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                    else _rss_kib("VmHWM") * 1024) - base
    return statistics.median(times), peak / 2**20, out


def find_units(model, size, device, seed, tries, classes) -> tuple[torch.Tensor, list[Unit], str]:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(tries):
        image = torch.randn(1, 3, size, size, generator=gen).to(device)
        with torch.no_grad():
            pred = model_logits(model, image).argmax(1)[0]
        found = pred.unique().tolist()
        if len(found) >= 2:
            return image, [Unit(0, c, pred == c) for c in found], f"predicted classes {found}"
    bands = torch.arange(size, device=device)[:, None].expand(size, size) * len(classes) // size
    units = [Unit(0, c, bands == i) for i, c in enumerate(classes)]
    return image, units, f"no input with >= 2 predicted classes in {tries} tries: classes {classes} on bands"


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.float() - b.float()).abs()
    return f"max {float(d.max()):.2e} mean {float(d.mean()):.2e}"


def bench_gradient(args, device) -> None:
    torch.manual_seed(args.seed)
    model = build_model(args.arch, num_classes=5).to(device).eval()
    image, units, how = find_units(model, args.size, device, args.seed, args.tries, args.classes)
    print(f"\n== gradient methods: {args.arch} {args.size}x{args.size}, {len(units)} units ({how}), "
          f"layer {args.layer}, device {device}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        model_logits(model, image)   # warm-up
    t_fwd, m_fwd, _ = measure(lambda: torch.no_grad()(model_logits)(model, image), device, args.repeats)
    print(f"plain inference forward: {t_fwd:.3f} s, peak +{m_fwd:.0f} MiB")
    fast_methods = [cls(model, args.layer) for cls, _ in GRADIENT]
    gradient_maps(fast_methods, image, units)   # warm-up
    t_all, m_all, fast = measure(lambda: gradient_maps(fast_methods, image, units), device, args.repeats)
    lib_total = 0.0
    print(f"{'method':<16}{'library s':>10}{'fast s':>9}{'ratio':>8}{'lib MiB':>9}{'fast MiB':>9}  maps |fast - library|")
    for (cls, name), method in zip(GRADIENT, fast_methods):
        t_lib, m_lib, ref = measure(lambda: LibraryCAM(model, args.layer, name)(image, units), device,
                                    args.library_repeats)
        t_one, m_one, one = measure(lambda: method(image, units), device, args.repeats)
        lib_total += t_lib
        print(f"{name:<16}{t_lib:>10.3f}{t_one:>9.3f}{t_lib / t_one:>7.1f}x{m_lib:>9.0f}{m_one:>9.0f}  "
              f"{diff(fast[method.name], ref)}")
    print(f"{'all 4 together':<16}{lib_total:>10.3f}{t_all:>9.3f}{lib_total / t_all:>7.1f}x{'':>9}{m_all:>9.0f}")
    print(f"fast (all 4 methods, all {len(units)} units) = {t_all / t_fwd:.2f} x one plain inference forward "
          f"(target <= 2); library / fast = {lib_total / t_all:.1f} x (target >= 10)")
    if args.amp:
        with torch.autocast(device.type, dtype=amp_dtype(args.amp)):
            model_logits(model, image)
            t_fwd16, _, _ = measure(lambda: torch.no_grad()(model_logits)(model, image), device, args.repeats)
            gradient_maps(fast_methods, image, units)
            t_all16, m_all16, fast16 = measure(lambda: gradient_maps(fast_methods, image, units), device, args.repeats)
        print(f"{args.amp} autocast: plain forward {t_fwd16:.3f} s ({t_fwd / t_fwd16:.2f}x float32's); fast, all 4 "
              f"{t_all16:.3f} s = {t_all16 / t_fwd16:.2f} x its forward, {t_all / t_all16:.2f}x float32's, peak "
              f"+{m_all16:.0f} MiB; maps vs float32: "
              + "; ".join(f"{name} {diff(fast16[name], fast[name])}" for name in fast))


def bench_scorecam(args, device) -> None:
    torch.manual_seed(args.seed)
    model = build_model(args.small_arch, num_classes=5).to(device).eval()
    image, units, how = find_units(model, args.small_size, device, args.seed, args.tries, args.classes)
    layer = args.small_layer
    print(f"\n== ScoreCAM: {args.small_arch} {args.small_size}x{args.small_size}, layer {layer}, "
          f"{len(units)} units ({how}), batch_size {args.batch_size}")
    with torch.no_grad():
        model_logits(model, image)
    masked = image.expand(args.batch_size, -1, -1, -1).contiguous()
    t_bound, m_bound, _ = measure(lambda: torch.no_grad()(model_logits)(model, masked), device, 1)
    t_fast, m_fast, fast = measure(lambda: ScoreCAM(model, layer, args.batch_size)(image, units), device, 1)
    t_lib, m_lib, ref = measure(lambda: LibraryCAM(model, layer, "ScoreCAM", args.batch_size)(image, units),
                                device, 1)
    print(f"library {t_lib:.2f} s, peak +{m_lib:.0f} MiB | fast {t_fast:.2f} s, peak +{m_fast:.0f} MiB | "
          f"ratio {t_lib / t_fast:.1f}x (target >= {len(units)} = units) | maps {diff(fast, ref)}")
    if args.amp:
        with torch.autocast(device.type, dtype=amp_dtype(args.amp)):
            t_16, m_16, fast16 = measure(lambda: ScoreCAM(model, layer, args.batch_size)(image, units), device, 1)
        print(f"{args.amp} autocast: fast {t_16:.2f} s ({t_fast / t_16:.2f}x float32's), peak +{m_16:.0f} MiB | "
              f"maps vs float32 {diff(fast16, fast)}")
    print(f"memory bound: one inference forward of batch_size={args.batch_size} masked inputs takes "
          f"+{m_bound:.0f} MiB ({t_bound:.2f} s); fast ScoreCAM peak +{m_fast:.0f} MiB "
          f"({'within' if m_fast <= 1.25 * m_bound + 16 else 'ABOVE'} it)")


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # A fixed mmap threshold makes glibc return big freed tensors to the OS at once, so the
        # resident-set peak (VmHWM) measures each call instead of the allocator's cache.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="deeplabv3_resnet101")
    p.add_argument("--layer", default="backbone.layer4")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--small-arch", default="deeplabv3_mobilenet_v3_large")
    p.add_argument("--small-layer", default="backbone.16")
    p.add_argument("--small-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="ScoreCAM masked inputs per forward pass")
    p.add_argument("--classes", type=int, nargs="+", default=[1, 2], help="fallback target classes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--library-repeats", type=int, default=1, help="the library is slow: fewer repeats")
    p.add_argument("--tries", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip", choices=["gradient", "scorecam"], default=None)
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                   help="also the fast engine under this autocast (as xai.amp on CUDA): time and maps vs float32")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.skip != "gradient":
        bench_gradient(args, device)
    if args.skip != "scorecam":
        bench_scorecam(args, device)


if __name__ == "__main__":
    main()
