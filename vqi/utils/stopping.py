"""Stopping a process cleanly on SIGTERM/SIGHUP (`kill PID`, `timeout`, a container stop).

The handler raises `Stopped` in the main thread, so the stack unwinds as on Ctrl-C: `finally`
blocks remove temporary files and the tracking code ends the run as KILLED with the reason.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The process was asked to stop by a signal. A BaseException, like KeyboardInterrupt, so
    that `except Exception` in stage code does not swallow it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first of `signals` raises `Stopped`; later ones are ignored so that
    the clean-up it starts can finish (SIGKILL still ends the process at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, _frame):
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
