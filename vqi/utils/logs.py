"""Keep third-party noise out of the logs: werkzeug's ANSI colour codes, matplotlib's font cache.

Werkzeug colours its request lines (`"GET / HTTP/1.1" 200`) with ANSI escape codes whether or not
it writes to a terminal, so Hydra's log file gets raw `\\x1b[32m` sequences; matplotlib announces
"building the font cache" at WARNING on a fresh machine, which says nothing about the run.
"""
from __future__ import annotations

import logging
import re

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StripAnsi(logging.Filter):
    """Renders the record's message once, without ANSI escape codes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if ANSI.search(message):
            record.msg, record.args = ANSI.sub("", message), None
        return True


def quiet_third_party_logs() -> None:
    """Strip werkzeug's colours and silence matplotlib's font-cache notice (idempotent)."""
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, StripAnsi) for f in werkzeug.filters):
        werkzeug.addFilter(StripAnsi())
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
