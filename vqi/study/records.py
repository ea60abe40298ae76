"""A study's results.jsonl: one JSON record a line, shared by parallel jobs (one seed each, on a
Hydra launcher). A record is appended in one write under an exclusive POSIX lock and the file is
read under a shared one, so lines of parallel jobs never interleave and no reader sees half a
line. POSIX (`lockf`) rather than BSD (`flock`) locks: they also hold across NFS clients, the
shared file system of a SLURM cluster.
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path


def append_record(path: Path, record: dict) -> None:
    """Append `record` as one line to `path`, waiting for any other job's append to finish."""
    line = json.dumps(record) + "\n"
    with open(path, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            handle.write(line)
            handle.flush()
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def load_records(path: Path) -> list[dict]:
    """Every record of `path` (none if it does not exist yet)."""
    if not path.is_file():
        return []
    with open(path) as handle:
        fcntl.lockf(handle, fcntl.LOCK_SH)
        text = handle.read()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
