"""Logs stay readable off a terminal: periodic one-line progress instead of tqdm bars, no ANSI
colour codes from werkzeug, no matplotlib font-cache notice."""
from __future__ import annotations

import io
import logging

from tqdm import tqdm
from werkzeug.serving import _ansi_style

from vqi.utils.logs import quiet_third_party_logs
from vqi.utils.progress import LogProgress, progress


class Clock:
    """Seconds that advance by `step` on every reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_stream_that_is_no_terminal_gets_log_lines_not_bars():
    assert isinstance(progress(range(3), "x", stream=io.StringIO()), LogProgress)
    assert isinstance(progress(range(3), "x", stream=_Tty()), tqdm)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_progress_writes_a_short_line_per_interval_and_a_closing_one(caplog):
    caplog.set_level(logging.INFO, logger="vqi.progress")
    bar = LogProgress(range(10), "train epoch 1", interval=30.0, clock=Clock(10.0))
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.2f}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train epoch 1: 3/10 it (30%), 30 s, loss=0.33"
    assert lines[-1].endswith("(done)") and lines[-1].startswith("train epoch 1: 10/10 it (100%)")
    assert len(lines) == 4 and all(len(line) < 80 and "\r" not in line for line in lines)


def test_a_short_or_disabled_loop_stays_silent(caplog):
    caplog.set_level(logging.INFO, logger="vqi.progress")
    assert list(LogProgress(range(5), "quick", interval=30.0, clock=Clock(1.0))) == list(range(5))
    assert list(progress(range(5), "off", disable=True, stream=io.StringIO())) == list(range(5))
    assert caplog.records == []


def test_werkzeug_colours_and_the_font_cache_notice_stay_out_of_the_log():
    quiet_third_party_logs()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    for name in ("werkzeug", "matplotlib.font_manager"):
        logging.getLogger(name).addHandler(handler)
    try:
        logging.getLogger("werkzeug").setLevel(logging.INFO)
        logging.getLogger("werkzeug").info('"%s" %s %s', _ansi_style("GET / HTTP/1.1", "bold"),
                                           _ansi_style("200", "green"), "-")
        logging.getLogger("matplotlib.font_manager").warning(
            "Matplotlib is building the font cache; this may take a moment.")
    finally:
        for name in ("werkzeug", "matplotlib.font_manager"):
            logging.getLogger(name).removeHandler(handler)
    assert stream.getvalue() == '"GET / HTTP/1.1" 200 -\n'
