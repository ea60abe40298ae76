"""The extra cost of an IMPACTX training step (docs/metrics.md, "IMPACTX") over a plain one.

    OMP_NUM_THREADS=1 python scripts/bench_impactx.py                      # the demo's step: LR-ASPP, 96 px crops, batch 4
    python scripts/bench_impactx.py --arch deeplabv3_resnet101 --size 256 --batch 8 --device cuda

Both steps are `vqi.engine.train_loop.train_one_epoch` over one batch (the same random images and
masks) with the Dice loss and AdamW, in one process: plain on the torchvision model, IMPACTX on the
same model wrapped with the explanation branch, its batch carrying random teacher maps (`--weight`
lambda). After two warm-up steps each, `--pairs` times a plain and an IMPACTX step (which goes first
alternates), each timed alone: a busy machine slows both steps of a pair alike, so the median of the
pairs' ratios is the figure to read (the fastest step of each is printed beside it). Also the
parameters the branch adds.
"""
from __future__ import annotations

import argparse
import time

import torch

from vqi.engine.train_loop import train_one_epoch
from vqi.models import build_model
from vqi.models.losses import DiceLoss


def batch(size: int, images: int, num_classes: int, device: torch.device) -> tuple:
    """Random images, masks and teacher maps (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(images, 3, size, size, generator=g).to(device),
            torch.randint(0, num_classes, (images, size, size), generator=g).to(device), [""] * images,
            torch.rand(images, num_classes - 1, size, size, generator=g).to(device))


def timed_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: tuple, device: torch.device,
               weight: float | None, amp: bool) -> float:
    """Seconds of one training step (`weight` None: a plain step, the teacher maps unused)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_one_epoch(model, DiceLoss(), optimizer, [data], device, amp=amp, channels_last=amp, progress=False,
                    explanation_weight=weight)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=30, help="timed (plain, IMPACTX) pairs of steps")
    parser.add_argument("--channels", type=int, default=64, help="train.impactx.channels")
    parser.add_argument("--weight", type=float, default=1.0, help="train.impactx.weight (lambda)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    torch.manual_seed(0)
    plain = build_model(args.arch, num_classes=5).to(device)
    torch.manual_seed(0)
    impactx = build_model(args.arch, num_classes=5, explanation_channels=args.channels).to(device)
    data = batch(args.size, args.batch, 5, device)
    runs = [(plain, torch.optim.AdamW(plain.parameters(), lr=1e-3), None),
            (impactx, torch.optim.AdamW(impactx.parameters(), lr=1e-3), args.weight)]
    for _ in range(2):   # warm-up: first-call allocations and kernel choices
        for model, optimizer, weight in runs:
            timed_step(model, optimizer, data, device, weight, amp)
    times = []
    for i in range(args.pairs):   # which goes first alternates, so neither profits from the other's caches
        order = runs if i % 2 == 0 else runs[::-1]
        pair = {id(model): timed_step(model, optimizer, data, device, weight, amp) for model, optimizer, weight in order}
        times.append((pair[id(plain)], pair[id(impactx)]))
    ratios = sorted(t_impactx / t_plain for t_plain, t_impactx in times)
    quartiles = [ratios[int(q * (len(ratios) - 1))] for q in (0.25, 0.5, 0.75)]
    added = sum(p.numel() for p in impactx.parameters()) - sum(p.numel() for p in plain.parameters())
    print(f"{args.arch} {args.size}x{args.size} batch {args.batch} on {args.device} "
          f"({torch.get_num_threads()} threads{', float16 autocast' if amp else ''}), E={args.channels}, "
          f"lambda={args.weight}: {args.pairs} pairs of steps")
    print(f"IMPACTX / plain step: median {quartiles[1]:.3f} (quartiles {quartiles[0]:.3f}, {quartiles[2]:.3f}); "
          f"fastest step plain {min(t[0] for t in times):.4f} s, IMPACTX {min(t[1] for t in times):.4f} s")
    print(f"the branch adds {added / 1e6:.3f} M parameters to {sum(p.numel() for p in plain.parameters()) / 1e6:.2f} M")


if __name__ == "__main__":
    main()
