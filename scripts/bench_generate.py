"""Benchmark: the synthetic generator's seconds per image with one process and with --workers.

    python scripts/bench_generate.py                    # 24 images at 500 px, 1 vs all cores
    python scripts/bench_generate.py --size 320 --images 40 --workers 2

Prints seconds per image of each, the speed-up, and whether both wrote the same bytes (they
must: every image draws from its own seed).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vqi.data.synthetic import generate, machine_cores


def timed(out: Path, args: argparse.Namespace, workers: int) -> float:
    t0 = time.perf_counter()
    generate(out, num_images=args.images, size=args.size, seed=args.seed, noise=None, workers=workers)
    return (time.perf_counter() - t0) / args.images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--workers", type=int, default=machine_cores())
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = timed(Path(tmp) / "one", args, 1)
        many = timed(Path(tmp) / "many", args, args.workers)
        files = sorted(q.relative_to(Path(tmp) / "one") for q in (Path(tmp) / "one").rglob("*") if q.is_file())
        same = all((Path(tmp) / "one" / f).read_bytes() == (Path(tmp) / "many" / f).read_bytes() for f in files)
    print(f"{args.images} images at {args.size} px: 1 process {one:.3f} s/image, {args.workers} workers "
          f"{many:.3f} s/image, speed-up {one / many:.2f}x; {len(files)} files byte-identical: {same}")


if __name__ == "__main__":
    main()
