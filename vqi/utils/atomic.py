"""Atomic, durable file and folder writes: a reader never sees a half-written file, or a folder
holding some old and some new files, even after a crash.

The data is fsynced before the rename and the folder after it, so a power cut leaves either
the old file or the whole new one. Files get the mode the umask gives (0666 & ~umask), as
`open()` would, not the 0600 of a private temporary file.

A folder is built in a temporary sibling `.<name>.tmp-<pid>.<start>@<host>-<random>` and swapped
into place whole (`atomic_dir`); a later build removes the siblings whose process is gone
(killed with -9), as each can hold a whole dataset.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vqi.utils.owner import Owner

log = logging.getLogger(__name__)

UNOWNED_STALE_SECONDS = 24 * 3600
"""A temporary without an owner in its name (older versions) is stale after this."""

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def public_mode(path: str | os.PathLike) -> None:
    """Give a folder made private by `mkdtemp` (or a file by `mkstemp`) the mode a plain create would give it."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in folder `path` durable (a no-op where folders cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder below `root` (before renaming a finished folder into place)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


def _create_beside(path: Path) -> Path:
    """A new empty file `.<name>.<random>.tmp<suffix>` beside `path`, created with mode 0666 so
    the kernel applies the umask (no chmod, no reading the umask per file)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    `durable=False` skips both fsyncs (still atomic for readers, not across a power cut): for
    files derived again on demand, written by the hundred, where two fsyncs each cost more
    than making them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_beside(path)
    try:
        yield tmp_path
        if durable:
            fsync_file(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_bytes_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Write `data` atomically unless the file already holds exactly it (its mtime then stays,
    so stages keyed on input files see no change). Returns whether it wrote."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def temp_dir_beside(out_dir: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new private folder `.<name>.<kind>-<owner>-<random>` beside `out_dir` (same file
    system, so it can be renamed into place); the owner lets a later run tell it is stale."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.{kind}-{Owner.me().token()}-"))


def swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `tmp`; a crash in between leaves no folder under the final name."""
    old = None
    if out_dir.exists():
        old = temp_dir_beside(out_dir, "old")
        os.replace(out_dir, old / "previous")
    os.replace(tmp, out_dir)
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(out_dir: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling of `out_dir` to fill; when the block succeeds it replaces
    `out_dir` whole, else it is removed and `out_dir` stays as it was.

    Readers see all the old files or all the new ones, never a mixture (an interrupted rebuild
    of explanation maps left one map of the new model among the old). `durable` fsyncs every
    file first, so a power cut cannot leave the new folder with empty files.
    """
    out_dir = Path(out_dir)
    remove_stale_siblings(out_dir)
    tmp = temp_dir_beside(out_dir)
    try:
        yield tmp
        public_mode(tmp)  # mkdtemp made it 0700
        if durable:
            fsync_tree(tmp)
        swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of `folder`; when the block succeeds, each file written
    there is renamed into `folder` (the files it already holds by other names stay), else none is.

    For folders that may hold files of others (a configurable figures folder), which
    `atomic_dir` would replace whole."""
    folder = Path(folder)
    remove_stale_siblings(folder)
    tmp = temp_dir_beside(folder)
    try:
        yield tmp
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(tmp.iterdir()):
            if path.is_file():
                os.chmod(path, 0o666 & ~current_umask())
                os.replace(path, folder / path.name)
        fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_siblings(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `out_dir` (`.<name>.tmp-*`, `.<name>.old-*`) that no
    live process owns; return them."""
    out_dir = Path(out_dir)
    removed = []
    for kind in ("tmp", "old"):
        prefix = f".{out_dir.name}.{kind}-"
        for path in out_dir.parent.glob(f"{glob.escape(prefix)}*"):
            owner = Owner.parse(path.name[len(prefix):].rsplit("-", 1)[0])
            stale = (owner.is_gone() if owner is not None
                     else time.time() - path.stat().st_mtime > UNOWNED_STALE_SECONDS)
            if stale and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                log.warning("removed %s: a temporary folder left by %s", path,
                            f"process {owner.pid} on {owner.host}" if owner else "an interrupted build")
                removed.append(path)
    return removed
