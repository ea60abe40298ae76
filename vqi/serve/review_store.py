"""The review file as the review page edits it: per-row updates merged into the current file.

Concurrency rule (optimistic, per row): every row carries a `version`, a hash of its editable
fields (decision, k, note). An update names the row and the version the client last saw; under a
lock (a thread lock plus an exclusive `flock` on `<review file>.lock`, so several server
processes agree too) the current file is read, the row's version compared, the change applied to
that row only, and the whole file written atomically. Two tabs editing different rows never lose
each other's work; a stale edit of the same row is refused (409) with the row as it now is, so
nothing is overwritten silently. All state lives in the file: a server restart loses nothing.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from vqi.augment.proposals import DECISIONS, ENLARGE, Proposal
from vqi.augment.review import ReviewFileError, read_review, write_review
from vqi.serve.safety import BadInput

MAX_NOTE = 500
MAX_K = 50


class Conflict(BadInput):
    """The row changed since the client read it; `row` is its current state."""

    def __init__(self, row: dict):
        super().__init__(f"proposal {row['proposal_id']!r} was changed elsewhere; reload and retry", 409)
        self.row = row


def plain_note(note: str) -> str:
    """One line of text; a leading `= + - @` is quoted so that a spreadsheet never runs it as a formula."""
    note = " ".join(note.split())
    return "'" + note if note[:1] in ("=", "+", "-", "@") else note


def version(p: Proposal) -> str:
    return hashlib.sha1(f"{p.decision}\x1f{p.k}\x1f{p.note}".encode()).hexdigest()[:12]


def as_row(p: Proposal) -> dict:
    row = asdict(p)
    row.pop("region")
    row["version"] = version(p)
    return row


class ReviewStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> list[Proposal]:
        if not self.path.is_file():
            raise BadInput("no review file yet: run stage=augment first", 404)
        try:
            return read_review(self.path)
        except ReviewFileError as err:
            raise BadInput(f"the review file is malformed: {err}".replace(str(self.path), self.path.name),
                           409) from None

    def proposals(self) -> list[Proposal]:
        return self._read()

    def find(self, proposal_id: str) -> Proposal:
        for p in self._read():
            if p.proposal_id == proposal_id:
                return p
        raise BadInput(f"no proposal {proposal_id!r} in the review file", 404)

    def update(self, proposal_id: str, expected_version: str, decision: str | None = None,
               k: int | None = None, note: str | None = None) -> dict:
        """Apply one row's change if its version still matches; return the row as stored."""
        if decision is not None and decision not in DECISIONS:
            raise BadInput(f"field 'decision' must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise BadInput(f"field 'note' must be text of at most {MAX_NOTE} characters")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_K):
            raise BadInput(f"field 'k' must be an integer from 0 to {MAX_K}, got {k!r}")
        with self._locked():
            proposals = self._read()
            match = [p for p in proposals if p.proposal_id == proposal_id]
            if not match:
                raise BadInput(f"no proposal {proposal_id!r} in the review file", 404)
            p = match[0]
            if version(p) != expected_version:
                raise Conflict(as_row(p))
            if k is not None and p.kind != ENLARGE:
                raise BadInput(f"field 'k': proposal {proposal_id!r} is a {p.kind} proposal, only "
                               f"enlargements have k")
            if decision is not None:
                p.decision = decision
            if k is not None:
                p.k = k
            if note is not None:
                p.note = plain_note(note)
            write_review(self.path, proposals)
            return as_row(p)
