"""Atomic writes respect the umask and are durable: the file is fsynced before the rename and
its folder after; the prepared folder gets the umask's mode too."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from data_factory import CLASS_MAP, square, write_labelme
from vqi.review.file import write_review
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


def test_stale_temporaries_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    """What `kill -9` leaves: a checkpoint's temporary owned by a dead process, one of an older
    version (no owner, older than this process) and a generated dataset's folder (no owner);
    kept: a live process's temporaries, fresh unowned ones, and names these writers never make."""
    import time

    from vqi.utils.owner import Owner

    dead = Owner(Owner.me().host, 999_999_999, "0").token()      # no such process
    me = Owner.me().token()
    old = time.time() - 3600                                       # before this process started

    def make(name, folder=False, mtime=None):
        path = tmp_path / name
        path.mkdir() if folder else path.write_bytes(b"x")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    gone = [make(f".last.pt.tmp-{dead}-0123456789ab.pt"), make(".best.pt.0123456789ab.tmp.pt", mtime=old),
            make(f".prepared.tmp-{dead}-k2j4", folder=True), make(f".prepared.old-{dead}-k2j5", folder=True)]
    kept = [make("last.pt"), make(f".last.pt.tmp-{me}-0123456789ab.pt"), make(".best.pt.0123456789ab.tmp.pt.x"),
            make(".last.pt.abcdef012345.tmp.pt"),                              # fresh: may be in use
            make(".synthetic-n8.tmp-abc_123", folder=True, mtime=old),         # unowned: only by its name
            make(".notes.tmp-mine", mtime=old), make(f".prepared.tmp-{me}-k2j6", folder=True)]
    assert sorted(atomic.remove_stale_temporaries(tmp_path)) == sorted(gone)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)
    # the generator's folder of the very dataset about to be written, older than this process
    assert atomic.remove_stale_siblings(tmp_path / "synthetic-n8") == [tmp_path / ".synthetic-n8.tmp-abc_123"]
    make(".synthetic-n8.tmp-new_456", folder=True)                              # fresh: may be in use
    assert atomic.remove_stale_siblings(tmp_path / "synthetic-n8") == []


def test_an_atomic_temporary_names_its_owner(tmp_path):
    from vqi.utils.owner import Owner

    with atomic.atomic_path(tmp_path / "last.pt") as tmp:
        assert tmp.name.startswith(f".last.pt.tmp-{Owner.me().token()}-") and tmp.suffix == ".pt"
        assert atomic.remove_stale_temporaries(tmp_path) == []         # this process is alive
