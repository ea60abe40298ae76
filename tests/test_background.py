"""The background worker: every job runs, at most max_pending wait, errors are raised."""
from __future__ import annotations

import threading

import pytest

from vqi.utils.background import BackgroundWorker


def test_jobs_run_in_order_and_at_most_max_pending_wait():
    gate, done, seen = threading.Event(), [], []
    with BackgroundWorker(max_pending=2) as worker:
        worker.submit(gate.wait)
        worker.submit(done.append, 1)
        seen.append(len(worker._pending))
        threading.Timer(0.2, gate.set).start()
        worker.submit(done.append, 2)        # blocks until the first job ended
        seen.append(gate.is_set())
    assert done == [1, 2] and seen == [2, True]


def test_an_error_in_a_job_is_raised_to_the_caller():
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWorker() as worker:
            worker.submit(fail)
    with pytest.raises(ValueError, match="max_pending"):
        BackgroundWorker(max_pending=0)
