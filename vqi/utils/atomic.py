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

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vqi.utils.owner import Owner, process_start_time

log = logging.getLogger(__name__)

_UMASK_LOCK = threading.Lock()
_TOKENS: dict[int, str] = {}


def _owner_token() -> str:
    """This process's `Owner` token, for temporary names (cached per pid: workers fork or spawn)."""
    pid = os.getpid()
    if pid not in _TOKENS:
        _TOKENS[pid] = Owner.me().token()
    return _TOKENS[pid]


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
    """A new empty file `.<name>.tmp-<owner>-<random><suffix>` beside `path` (the suffix kept for
    writers that choose the format by it), created with mode 0666 so the kernel applies the umask
    (no chmod, no reading the umask per file). The owner lets a later run tell it is stale."""
    while True:
        tmp = path.parent / f".{path.name}.tmp-{_owner_token()}-{secrets.token_hex(6)}{path.suffix}"
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
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.{kind}-{_owner_token()}-"))


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
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        if files:
            folder.mkdir(parents=True, exist_ok=True)
            for path in files:  # written with the umask's mode (atomic_path, open)
                os.replace(path, folder / path.name)
            fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_OWNED = re.compile(r"\.(?P<name>.+?)\.(?:tmp|old)-(?P<rest>.+)")
"""`.<name>.tmp-<owner>-<random>[<suffix>]` (atomic files and folders), `.<name>.old-<owner>-<random>`
(a replaced folder on its way out); a folder `.<name>.tmp-<random>` of older versions or of other
writers has no owner."""

_LEGACY_FILE = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp(?:\.[^.]+)?")
"""An atomic file of older versions: `.<name>.<12 hex>.tmp<suffix>`, no owner."""


def _stale(path: Path, name: str | None) -> tuple[bool, str]:
    """(whether `path` is a temporary of these writers that nobody can be using, who left it).

    Owned: its process is gone. Without an owner (older versions, the generator's folders): older
    than this process, and either an atomic file of older versions or a sibling of the very
    `name` this process is about to write (so a folder name someone else chose is never matched).
    """
    match = _OWNED.fullmatch(path.name)
    if match and (name is None or match["name"] == name):
        owner = Owner.parse(match["rest"].rsplit("-", 1)[0])
        if owner is not None:
            return owner.is_gone(), f"process {owner.pid} on {owner.host}"
        if name is not None:
            return path.lstat().st_mtime < process_start_time(), "an interrupted run"
    legacy = _LEGACY_FILE.fullmatch(path.name)
    if legacy and (name is None or legacy["name"] == name) and path.is_file():
        return path.lstat().st_mtime < process_start_time(), "an interrupted write"
    return False, ""


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporaries that killed writers (`kill -9`, a power cut) left in `folder`, only
    of `name` when given, and only ones nobody can be using (`_stale`); return them.

    A killed atomic write leaves a whole checkpoint, a killed folder build a whole dataset: the
    next run of the same writer calls this, so they do not pile up."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            continue
        try:
            stale, who = _stale(path, name)
        except OSError:  # removed meanwhile
            continue
        if not stale:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.warning("removed %s: a temporary left by %s", path, who)
        removed.append(path)
    return removed


def remove_stale_siblings(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the stale temporary siblings of `out_dir` (`.<name>.tmp-*`, `.<name>.old-*`); return them."""
    out_dir = Path(out_dir)
    return remove_stale_temporaries(out_dir.parent, out_dir.name)
