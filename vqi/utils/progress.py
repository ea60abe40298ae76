"""Progress over a loop: a tqdm bar on a terminal, a short periodic log line anywhere else.

A bar redraws itself with carriage returns; written to a file or a pipe those redraws pile up into
one very long line (a `make demo` log had a 5,771-character line of bars). When stderr is not a
terminal, progress is instead logged as one short line at most every `interval` seconds, plus a
closing line once such a line was written; loops shorter than `interval` stay silent.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger("vqi.progress")

INTERVAL = 30.0
"""Seconds between two log lines of one loop when stderr is not a terminal."""


class LogProgress:
    """Iterates like tqdm (with `set_postfix`), logging `desc: i/n (p%), t s, key=value` lines."""

    def __init__(self, iterable: Iterable, desc: str = "", total: int | None = None, unit: str = "it",
                 interval: float = INTERVAL, clock=time.monotonic):
        self.iterable, self.desc, self.unit, self.interval, self.clock = iterable, desc, unit, interval, clock
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def _line(self, done: int, seconds: float) -> str:
        count = f"{done}/{self.total} {self.unit}" if self.total else f"{done} {self.unit}"
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        return f"{self.desc}: {count}{share}, {seconds:.0f} s{extra}"

    def __iter__(self) -> Iterator:
        start = last = self.clock()
        done, logged = 0, False
        for item in self.iterable:
            yield item
            done += 1
            now = self.clock()
            if now - last >= self.interval:
                log.info(self._line(done, now - start))
                last, logged = now, True
        if logged:
            log.info(self._line(done, self.clock() - start) + " (done)")


def progress(iterable: Iterable, desc: str = "", *, disable: bool = False, total: int | None = None,
             unit: str = "it", leave: bool = True, interval: float = INTERVAL, stream=None):
    """A tqdm bar when `stream` (default stderr) is a terminal, else a `LogProgress`; `disable`
    gives neither (both support iteration and `set_postfix`)."""
    stream = sys.stderr if stream is None else stream
    if not disable and getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream)
    return LogProgress(iterable, desc, total, unit, float("inf") if disable else interval)
