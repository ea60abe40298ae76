"""Work handed to one background thread, with a bound on what may wait for it.

For CPU work that releases the GIL (PNG encoding, file writes) beside the model's passes: on a
GPU machine the CPU encodes while the GPU computes the next batch; on a CPU machine it uses a
core the model's threads leave free. At most `max_pending` jobs wait (the caller blocks on the
oldest beyond that), so memory stays bounded when the worker falls behind. Errors surface in
`wait` (or when leaving the `with` block), never silently.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class BackgroundWorker:
    def __init__(self, max_pending: int = 8):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vqi-background")
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        """Block until every job has run; re-raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "BackgroundWorker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
