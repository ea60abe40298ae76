"""Which process owns a run or a temporary folder, and whether that process is gone.

A process is named by host, pid and the pid's start time (Linux `/proc`), so a pid that the
system reused for another program does not count as the owner still running.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

_IMPORTED_AT = time.time()


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22); "" where
    there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_start_time() -> float:
    """When this process started (seconds since the epoch, from /proc); where there is no /proc,
    when this module was imported (at start-up, before any stage runs)."""
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(_start_time(os.getpid())) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return _IMPORTED_AT


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str = ""

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()))

    def is_gone(self) -> bool:
        """True only when this host can tell the process has ended: a process on another host
        may be alive, so it never counts as gone."""
        if self.host != socket.gethostname():
            return False
        if self.start and Path("/proc/self/stat").is_file():
            return _start_time(self.pid) != self.start
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def tags(self) -> dict[str, str]:
        return {"host": self.host, "pid": str(self.pid), "pid_start": self.start}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Owner | None:
        try:
            return cls(tags["host"], int(tags["pid"]), tags.get("pid_start", ""))
        except (KeyError, ValueError):
            return None

    def token(self) -> str:
        """`<pid>.<start>@<host>`, for file names; `parse` reads it back."""
        return f"{self.pid}.{self.start}@{self.host.replace('/', '_')}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        pid_start, sep, host = token.partition("@")
        pid, _, start = pid_start.partition(".")
        return cls(host, int(pid), start) if sep and pid.isdigit() else None
