"""The review file as the review page edits it: per-row updates merged into the current file.

Concurrency rule (optimistic, per row): every row carries a `version`, a hash of its editable
fields (decision, k, label, note, decided_by). An update names the row and the version the client
last saw; under a lock (a thread lock plus an exclusive `flock` on `<review file>.lock`, so several
server processes agree too) the current file is read, the row's version compared, the change
applied to that row only, and the whole file written atomically. Two tabs editing different rows never lose
each other's work; a stale edit of the same row is refused (409) with the row as it now is, so
nothing is overwritten silently. All state lives in the file: a server restart loses nothing.

A row that does not read (hand-edited or tampered: vqi.review.file) is listed as malformed
and answered 409; every other row stays reviewable, and the malformed row is written back as it
was whenever another row is saved. A batch `edit` refuses a file with any malformed row.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from vqi.augment.proposals import ACCEPT, DECISIONS, ENLARGE, K_LIMIT, Proposal, label_choices
from vqi.review.file import MalformedRow, ReviewFileError, label_problem, parse_rows, write_review
from vqi.review.safety import BadInput

T = TypeVar("T")
MAX_NOTE = 500
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
    return hashlib.sha1(f"{p.decision}\x1f{p.k}\x1f{p.label}\x1f{p.note}\x1f{p.decided_by}".encode()).hexdigest()[:12]


def as_row(p: Proposal) -> dict:
    """A proposal as the page reads it: no region, no per-ranker scores, the labels it may take,
    and a non-finite score (a ranker with no evidence) as null, which JSON can carry."""
    row = asdict(p)
    for name in ("region", "scores"):
        row.pop(name)
    row["score"] = p.score if math.isfinite(p.score) else None
    row["label_choices"] = list(label_choices(p))
    row["version"] = version(p)
    return row


def malformed_error(row: MalformedRow, path: Path) -> BadInput:
    """The 409 a request about a malformed row gets: the row, the field, and the way out."""
    return BadInput(f"{row.error.replace(str(path), path.name)}; fix that row in the file (the other rows "
                    f"can be reviewed meanwhile)", 409)


class ReviewStore:
    """The review file at `path`; `k_max` bounds the k an update may set (augment.enlarge.k_max)."""

    def __init__(self, path: str | os.PathLike, k_max: int = K_LIMIT):
        if not 0 <= k_max <= K_LIMIT:
            raise ValueError(f"k_max must be from 0 to {K_LIMIT}, got {k_max}")
        self.path = Path(path)
        self.k_max = k_max
        self._thread_lock = threading.Lock()
        self._cache: tuple[bytes, list[Proposal | MalformedRow]] | None = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> list[Proposal | MalformedRow]:
        """Parse the file now (for updates, under the lock)."""
        return self._parse(self._bytes())

    def _bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise BadInput("no review file yet: run stage=augment first", 404) from None

    def _parse(self, data: bytes) -> list[Proposal | MalformedRow]:
        try:
            return parse_rows(io.StringIO(data.decode("utf-8"), newline=""), self.path)
        except UnicodeDecodeError as err:
            raise BadInput(f"the review file is malformed: not UTF-8 ({err.reason})", 409) from None
        except ReviewFileError as err:
            raise BadInput(f"the review file is malformed: {err}".replace(str(self.path), self.path.name),
                           409) from None

    def rows(self) -> list[Proposal | MalformedRow]:
        """The rows as the file now holds them, parsed again only when its content changed (so
        paging through thousands of rows does not parse the CSV per request). Callers must not
        modify the returned rows."""
        data = self._bytes()
        key = hashlib.sha1(data).digest()
        cached = self._cache
        if cached is None or cached[0] != key:
            cached = (key, self._parse(data))
            self._cache = cached
        return cached[1]

    def proposals(self) -> list[Proposal]:
        """The rows that read as proposals (see `rows`)."""
        return [p for p in self.rows() if isinstance(p, Proposal)]

    def malformed(self) -> list[MalformedRow]:
        """The rows that do not, each with the reason naming its row and field."""
        return [r for r in self.rows() if isinstance(r, MalformedRow)]

    def find(self, proposal_id: str) -> Proposal:
        return _find(self.rows(), proposal_id, self.path)

    def edit(self, change: Callable[[list[Proposal]], T]) -> T:
        """Run `change` on the current rows under the lock and write them back (for batch edits,
        e.g. decisions read back from an annotation tool while the review page is open). A file
        with a malformed row is refused whole: a batch must not half-apply around it."""
        with self._locked():
            rows = self._read()
            bad = next((r for r in rows if isinstance(r, MalformedRow)), None)
            if bad is not None:
                raise ReviewFileError(bad.error)
            result = change(rows)
            write_review(self.path, rows)
            return result

    def update(self, proposal_id: str, expected_version: str, decision: str | None = None,
               k: int | None = None, note: str | None = None, label: str | None = None) -> dict:
        """Apply one row's change if its version still matches; return the row as stored. An
        accepted proposal must have a label its kind allows (an unlabelled region: its thin class
        or perplexed), given here or earlier."""
        if decision is not None and decision not in DECISIONS:
            raise BadInput(f"field 'decision' must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise BadInput(f"field 'note' must be text of at most {MAX_NOTE} characters")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.k_max):
            raise BadInput(f"field 'k' must be an integer from 0 to {self.k_max}, got {k!r}")
        if label is not None and not isinstance(label, str):
            raise BadInput(f"field 'label' must be text, got {label!r}")
        with self._locked():
            rows = self._read()
            p = _find(rows, proposal_id, self.path)
            if version(p) != expected_version:
                raise Conflict(as_row(p))
            if k is not None and p.kind != ENLARGE:
                raise BadInput(f"field 'k': proposal {proposal_id!r} is a {p.kind} proposal, only "
                               f"enlargements have k")
            if decision is not None:
                p.decision = decision
                p.decided_by = EXPERT
            if label is not None and label != p.label:
                p.label = label
                if p.decision == ACCEPT:   # accepted as another class: now the expert's decision
                    p.decided_by = EXPERT
            problem = label_problem(p)
            if problem:
                raise BadInput(f"proposal {proposal_id!r}: {problem}")
            if k is not None:
                p.k = k
            if note is not None:
                p.note = plain_note(note)
            write_review(self.path, rows)
            return as_row(p)


def _find(rows: list[Proposal | MalformedRow], proposal_id: str, path: Path) -> Proposal:
    """The proposal `proposal_id` names: 404 when there is none, 409 when its row is malformed."""
    for row in rows:
        if row.proposal_id == proposal_id:
            if isinstance(row, MalformedRow):
                raise malformed_error(row, path)
            return row
    raise BadInput(f"no proposal {proposal_id!r} in the review file", 404)
