"""Train/val/test splits: the dataset's official split lists when given, else a seeded split.

Official lists (`train.txt`, `val.txt`, `test.txt`; `val.txt` optional) hold one file name a line
(TTPLA: JSON names; the last line may lack a newline). Names are matched by stem.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def read_split_files(folder: str | Path) -> dict[str, list[str]]:
    """Stems listed per split in `folder`; a stem in two lists is an error."""
    folder = Path(folder)
    lists: dict[str, list[str]] = {}
    for split in SPLITS:
        path = folder / f"{split}.txt"
        if not path.is_file():
            if split == "val":
                continue
            raise FileNotFoundError(f"data.split_files: no {split}.txt in {folder}")
        lines = path.read_text(encoding="utf-8").splitlines()
        lists[split] = [Path(line.strip().replace("\\", "/")).stem for line in lines if line.strip()]
    seen: dict[str, str] = {}
    for split, stems in lists.items():
        for stem in stems:
            if seen.setdefault(stem, split) != split:
                raise ValueError(f"data.split_files: {stem!r} is listed in both {seen[stem]}.txt and {split}.txt")
    return lists


def assign_listed(stems: list[str], lists: dict[str, list[str]]) -> tuple[dict[str, str], list[str], int]:
    """Map each stem to its listed split; return (assignment, stems in no list, listed names absent)."""
    listed = {stem: split for split, names in lists.items() for stem in names}
    present = set(stems)
    assignment = {s: listed[s] for s in stems if s in listed}
    unlisted = [s for s in stems if s not in listed]
    absent = sum(1 for s in listed if s not in present)
    return assignment, unlisted, absent


def random_split(stems: list[str], test_fraction: float, val_fraction: float, seed: int) -> dict[str, str]:
    """A seeded split of `stems` (the paper: 80/20 train/test); train keeps at least one item,
    and a non-zero fraction gets at least one item when there are enough."""
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError(f"data.test_fraction + data.val_fraction must be in [0, 1), got {test_fraction} + {val_fraction}")
    order = sorted(stems)
    perm = np.random.default_rng(seed).permutation(len(order))
    n = len(order)

    def count(fraction: float) -> int:
        return max(1, round(n * fraction)) if fraction > 0 else 0

    n_test = count(test_fraction) if n >= 2 else 0
    n_val = count(val_fraction) if n - n_test >= 2 else 0
    out = {}
    for rank, idx in enumerate(perm):
        out[order[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out
