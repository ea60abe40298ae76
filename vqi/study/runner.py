"""Running pipeline stages as child processes for a study, so that stopping the study stops them.

`vqi_run` starts `python -m vqi.run stage=...` with its output appended to a log; a SIGTERM or
SIGINT received meanwhile is forwarded to the child, which is waited for, and the study exits
non-zero (a child left running would keep writing into folders a rerun then uses).
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from vqi import PROJECT_ROOT


class StudyInterrupted(SystemExit):
    """The study was told to stop; its running stage was stopped with it."""


def vqi_run(stage: str, overrides: list[str], log: Path) -> None:
    """`python -m vqi.run stage=<stage> ...`, its output appended to `log`; raises on failure."""
    command = [sys.executable, "-m", "vqi.run", f"stage={stage}", "train.progress=false", "xai.progress=false",
               *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT)
        received: list[int] = []

        def forward(signum, _frame):
            received.append(signum)
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if received:
        raise StudyInterrupted(f"stopped by signal {received[0]} during stage={stage} (see {log}); "
                               "rerun the same command to resume")
    if code:
        raise RuntimeError(f"stage={stage} failed (exit {code}); see {log}")
