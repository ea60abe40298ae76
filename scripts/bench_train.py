"""Training and inference speed of our loop beside a plain torchvision forward/backward.

    python scripts/bench_train.py --arch deeplabv3_mobilenet_v3_large --size 128 --batch 4
    python scripts/bench_train.py --arch deeplabv3_resnet101 --size 500 --batch 8 --device cuda

Ours: `vqi.engine.train_loop.train_one_epoch` (Dice loss, AMP + channels_last on CUDA) and
`evaluate` (argmax + confusion matrix). Reference: the same torchvision model in a plain loop
written as torchvision's references/segmentation does, at the same precision and memory format
as ours: `model(x)["out"]` + cross entropy (`--ref-loss dice`: our Dice loss) + backward + SGD step, and a no-grad forward + argmax;
on CUDA both under float16 autocast (GradScaler for training) with the model and inputs in
channels_last, on the CPU float32 (where ours is float32 too). On CUDA a third inference row
compares our mixed-precision `evaluate` with the plain float32 forward (goal >= 2).
Each measurement runs in a fresh process so peak memory is its own (CUDA: max allocated;
CPU: peak resident set size). Prints images/s and peak memory, and ours / reference.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vqi.engine.precision import Precision
from vqi.engine.train_loop import evaluate, train_one_epoch
from vqi.models import build_model
from vqi.models.losses import DiceLoss


class RandomBatches(Dataset):
    """`n` random images and masks, made once (data loading is not what is timed)."""

    def __init__(self, n: int, size: int, num_classes: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, num_classes, (n, size, size), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], str(i)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(kind: str, args: argparse.Namespace) -> tuple[float, float]:
    """(images/s, peak MB) of one kind: ours_train, ref_train, ours_infer, ref_infer, ref32_infer
    (the plain float32 forward in the default memory format, whatever the device), compiled_train
    (ours on `torch.compile(model)`, as train.compile=true; the warm-up batches pay the compile)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, num_classes=5).to(device)
    data = RandomBatches(args.batch * (args.steps + args.warmup), args.size, 5)
    loader = DataLoader(data, batch_size=args.batch)
    batches = list(loader)
    warm, timed = batches[:args.warmup], batches[args.warmup:]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    mixed = device.type == "cuda" and kind != "ref32_infer"   # what ours does on this device
    memory_format = torch.channels_last if mixed else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    compiled = torch.compile(model) if kind == "compiled_train" else None

    def ref_input(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, non_blocking=True).contiguous(memory_format=memory_format)

    def run(chunk):
        if kind in ("ours_train", "compiled_train"):
            net = compiled if kind == "compiled_train" else model
            train_one_epoch(net, DiceLoss(), optimizer, chunk, device, amp=True, channels_last=True,
                            progress=False)
        elif kind == "ours_infer":
            evaluate(model, chunk, device, 5, precision=Precision(True, "float16", True), progress=False)
        elif kind == "ref_train":
            model.train()
            for x, y, _ in chunk:
                with torch.autocast(device.type, torch.float16, enabled=mixed):
                    out = model(ref_input(x))["out"]
                    y = y.to(device)
                    loss = DiceLoss()(out, y) if args.ref_loss == "dice" else F.cross_entropy(out, y, ignore_index=255)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        else:
            model.eval()
            with torch.inference_mode(), torch.autocast(device.type, torch.float16, enabled=mixed):
                for x, _, _ in chunk:
                    model(ref_input(x))["out"].argmax(1).cpu()

    run(warm)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run(timed)
    _sync(device)
    return len(timed) * args.batch / (time.perf_counter() - start), _peak_mb(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="deeplabv3_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind, alternating; the fastest counts")
    parser.add_argument("--compile", action="store_true", help="also ours under torch.compile (train.compile)")
    parser.add_argument("--ref-loss", choices=["ce", "dice"], default="ce",
                        help="the reference's loss: ce as torchvision's references (default), or dice, ours, "
                             "to compare the loops alone")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    precision = "float16 autocast + channels_last" if args.device.startswith("cuda") else "float32"
    print(f"{args.arch} {args.size}x{args.size} batch {args.batch} on {args.device} ({precision}, ours and "
          f"the reference), {args.steps} timed batches after {args.warmup} warm-up; training loss: ours dice, "
          f"the reference {args.ref_loss}")
    print(f"{'':>7} {'ours img/s':>11} {'ref img/s':>10} {'ratio':>6} {'ours MB':>9} {'ref MB':>9} {'ratio':>6}")
    rows = [("train", "ref_train", "ours_train"), ("infer", "ref_infer", "ours_infer")]
    if args.device.startswith("cuda"):
        rows.append(("amp/32", "ref32_infer", "ours_infer"))
    if args.compile:
        rows.append(("compile", "ours_train", "compiled_train"))
    kinds = list(dict.fromkeys(kind for _, ref, ours in rows for kind in (ref, ours)))
    runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):   # alternating, so a busy moment of the machine hits every kind alike
        for kind in kinds:
            with ctx.Pool(1) as pool:
                runs[kind].append(pool.apply(measure, (kind, args)))
    results = {kind: max(r, key=lambda speed_memory: speed_memory[0]) for kind, r in runs.items()}
    for phase, ref, ours in rows:
        (o_s, o_m), (r_s, r_m) = results[ours], results[ref]
        print(f"{phase:>7} {o_s:11.2f} {r_s:10.2f} {o_s / r_s:6.2f} {o_m:9.0f} {r_m:9.0f} {o_m / r_m:6.2f}")
    print("goals: train >= 0.95, infer >= 1.0 (same precision and memory format as ours)"
          + ("; amp/32 (our mixed precision over the plain float32 forward) >= 2" if args.device.startswith("cuda") else "")
          + ("; compile: ours compiled / ours eager (the 'ours' column is compiled)" if args.compile else ""))


if __name__ == "__main__":
    main()
