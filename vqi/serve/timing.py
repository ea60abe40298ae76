"""Where one request's time goes: named parts timed back to back from the request's start, so the
parts plus `other` (whatever no part covered) add up to the total the server spent."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.parts: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to `name` (a part may be timed several times)."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - begin

    def report_ms(self) -> dict[str, float]:
        """Every part, `other` and `total`, in milliseconds (rounded to 0.1 ms)."""
        total = time.perf_counter() - self.start
        out = {name: round(1000 * seconds, 1) for name, seconds in self.parts.items()}
        out["other"] = round(1000 * max(0.0, total - sum(self.parts.values())), 1)
        out["total"] = round(1000 * total, 1)
        return out
