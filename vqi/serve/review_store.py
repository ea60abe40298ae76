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
import io
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from vqi.augment.proposals import DECISIONS, ENLARGE, Proposal
from vqi.augment.review import ReviewFileError, parse_review, write_review
from vqi.serve.safety import BadInput

T = TypeVar("T")
MAX_NOTE = 500
MAX_K = 50
EXPERT = "expert"
"""`decided_by` of a decision made on the review page (or read back from an annotation tool)."""


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
    return hashlib.sha1(f"{p.decision}\x1f{p.k}\x1f{p.note}\x1f{p.decided_by}".encode()).hexdigest()[:12]


def as_row(p: Proposal) -> dict:
    row = asdict(p)
    row.pop("region")
    row["version"] = version(p)
    return row


class ReviewStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._thread_lock = threading.Lock()
        self._cache: tuple[bytes, list[Proposal]] | None = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> list[Proposal]:
        """Parse the file now (for updates, under the lock)."""
        return self._parse(self._bytes())

    def _bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise BadInput("no review file yet: run stage=augment first", 404) from None

    def _parse(self, data: bytes) -> list[Proposal]:
        try:
            return parse_review(io.StringIO(data.decode("utf-8"), newline=""), self.path)
        except UnicodeDecodeError as err:
            raise BadInput(f"the review file is malformed: not UTF-8 ({err.reason})", 409) from None
        except ReviewFileError as err:
            raise BadInput(f"the review file is malformed: {err}".replace(str(self.path), self.path.name),
                           409) from None

    def proposals(self) -> list[Proposal]:
        """The rows as the file now holds them, parsed again only when its content changed (so
        paging through thousands of rows does not parse the CSV per request). Callers must not
        modify the returned proposals."""
        data = self._bytes()
        key = hashlib.sha1(data).digest()
        cached = self._cache
        if cached is None or cached[0] != key:
            cached = (key, self._parse(data))
            self._cache = cached
        return cached[1]

    def find(self, proposal_id: str) -> Proposal:
        for p in self.proposals():
            if p.proposal_id == proposal_id:
                return p
        raise BadInput(f"no proposal {proposal_id!r} in the review file", 404)

    def edit(self, change: Callable[[list[Proposal]], T]) -> T:
        """Run `change` on the current rows under the lock and write them back (for batch edits,
        e.g. decisions read back from an annotation tool while the review page is open)."""
        with self._locked():
            proposals = self._read()
            result = change(proposals)
            write_review(self.path, proposals)
            return result

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
                p.decided_by = EXPERT
            if k is not None:
                p.k = k
            if note is not None:
                p.note = plain_note(note)
            write_review(self.path, proposals)
            return as_row(p)
