"""Atomic writes respect the umask and are durable: the file is fsynced before the rename and
its folder after; the prepared folder gets the umask's mode too."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from data_factory import CLASS_MAP, square, write_labelme
from vqi.augment.review import write_review
from vqi.data import prepared
from vqi.data.labelme import LabelmeFolder
from vqi.models.checkpoint import save_checkpoint
from vqi.utils import atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_prepared_folders_follow_the_umask(tmp_path, umask_022):
    atomic.write_text(tmp_path / "a.txt", "x")
    write_review(tmp_path / "review.csv", [])
    save_checkpoint({"model": {"w": torch.zeros(1)}}, tmp_path / "best.pt")
    assert {mode(tmp_path / n) for n in ("a.txt", "review.csv", "best.pt")} == {0o644}
    for stem in ("a", "b"):
        write_labelme(tmp_path / "raw", stem, [("cable", square(0, 30, 100, 33))])
    out = tmp_path / "prepared"
    prepared.build(LabelmeFolder(tmp_path / "raw", CLASS_MAP), {"a": "train", "b": "test"}, out, 32,
                   progress=lambda items, **_: items)
    assert mode(out) == 0o755 and mode(out / "masks" / "train") == 0o755
    assert {mode(p) for p in out.rglob("*") if p.is_file()} == {0o644}


def test_a_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):  # the real fsync, recording what it synced
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic.write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2 and ".a.txt." in synced[0] and synced[1] == str(tmp_path)
