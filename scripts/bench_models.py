"""Step cost of the CPU-sized models side by side: why the demo trains LR-ASPP.

    python scripts/bench_models.py                 # the demo's shapes: 96-px training crops, 160-px eval
    python scripts/bench_models.py --crop 160 --eval-size 320

One process, the same random batch for every model, interleaved rounds (so a busy machine slows
each model alike): a training step (forward, Dice loss, backward, AdamW step) at `--crop`, and a
no-grad forward at `--eval-size` (what test, explain and evaluate pay per image). Prints
milliseconds per step and each model's cost as a ratio to the first (the reference).
"""
from __future__ import annotations

import argparse
import time

import torch

from vqi.models import build_model
from vqi.models.losses import DiceLoss
from vqi.models.sparse_conv import tap_sparse

MODELS = {  # name -> build_model kwargs; the first is the reference
    "deeplabv3_mobilenet_v3_large, output stride 8 (the previous demo)":
        {"arch": "deeplabv3_mobilenet_v3_large", "output_stride": 8},
    "lraspp_mobilenet_v3_large (the demo)": {"arch": "lraspp_mobilenet_v3_large"},
    "lraspp_mobilenet_v3_large, output stride 8": {"arch": "lraspp_mobilenet_v3_large", "output_stride": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=96, help="training crop side (px)")
    parser.add_argument("--eval-size", type=int, default=160, help="evaluation image side (px)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model and round")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.crop, args.crop)
    y = torch.randint(0, 5, (args.batch, args.crop, args.crop))
    x_eval = torch.randn(args.batch, 3, args.eval_size, args.eval_size)
    loss_fn = DiceLoss()
    models = {name: build_model(num_classes=5, **kw) for name, kw in MODELS.items()}
    optims = {name: torch.optim.AdamW(m.parameters(), 1e-3) for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "eval": []} for name in models}

    def train_step(name: str) -> None:
        model, opt = models[name], optims[name]
        model.train()
        with tap_sparse(model):  # as stage=train with train.tap_sparse (exact; a no-op where nothing is eligible)
            loss = loss_fn(model(x)["out"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def eval_step(name: str) -> None:
        models[name].eval()
        models[name](x_eval)

    for name in models:  # warm-up
        train_step(name)
        eval_step(name)
    for _ in range(args.rounds):
        for name in models:
            for kind, step in (("train", train_step), ("eval", eval_step)):
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(name)
                times[name][kind].append((time.perf_counter() - start) / args.steps)

    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    ref = next(iter(models))
    print(f"batch {args.batch}, {torch.get_num_threads()} threads; train step at {args.crop} px, "
          f"eval forward at {args.eval_size} px; ratio = reference time / this time (higher is faster)")
    for name in models:
        tr, ev = median(times[name]["train"]), median(times[name]["eval"])
        print(f"{name:70s} train {tr * 1e3:7.0f} ms ({median(times[ref]['train']) / tr:4.1f}x)   "
              f"eval {ev * 1e3:6.0f} ms ({median(times[ref]['eval']) / ev:4.1f}x)")


if __name__ == "__main__":
    main()
