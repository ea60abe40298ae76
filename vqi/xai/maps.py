"""Explanation maps on disk (docs/architecture.md): `<maps_dir>/<method>/<stem>.npz`, one float32
H x W array in [0, 1] per explained class name, plus `explain.json` saying how they were made
(checkpoint and its hash, target, engine, device, units, skipped units and seconds per image).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vqi.utils.atomic import atomic_path, write_json

META = "explain.json"


def file_hash(path: str | Path, length: int = 12) -> str:
    """Short sha256 of a file's bytes (names a checkpoint in tags and map metadata)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def save_maps(path: str | Path, maps: Mapping[str, np.ndarray], durable: bool = True) -> None:
    """Write one image's maps (class name -> H x W) atomically as float32 (`durable=False`: no
    fsync, for a folder that is fsynced whole before it is renamed into place)."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v, dtype=np.float32) for k, v in maps.items()})


def load_maps(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"explanation maps {path} do not exist (run stage=explain)")
    with np.load(path) as data:
        maps = {k: data[k] for k in data.files}
    for name, cam in maps.items():
        if cam.ndim != 2 or cam.dtype != np.float32 or cam.size and (cam.min() < 0 or cam.max() > 1):
            raise ValueError(f"{path}: array {name!r} must be a float32 H x W map in [0, 1], "
                             f"got {cam.dtype} {cam.shape}")
    return maps


def write_meta(method_dir: str | Path, meta: Mapping[str, Any]) -> None:
    write_json(Path(method_dir) / META, dict(meta))


def read_meta(method_dir: str | Path) -> dict[str, Any]:
    path = Path(method_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run stage=explain for this method first")
    meta = json.loads(path.read_text())
    for field in ("method", "checkpoint_hash", "target", "images"):
        if field not in meta:
            raise ValueError(f"{path}: field `{field}` missing")
    return meta
