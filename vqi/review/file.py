"""The review file: one CSV row per proposal that an expert edits (decision, k, label, note).

CSV because an inspection engineer opens it in any spreadsheet. Reading validates every row
and names the file, the row and the field that is wrong.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vqi.augment.proposals import (ACCEPT, DECISIONS, ENLARGE, K_LIMIT, KINDS, LEGACY_PERPLEXED_KIND, PERPLEXED,
                                   UNLABELLED, Proposal, label_choices)
from vqi.utils.atomic import write_text

COLUMNS = ("proposal_id", "image", "kind", "class_name", "annotation_id", "k", "score", "area",
           "bbox", "decision", "label", "decided_by", "note", "region")
OPTIONAL = frozenset({"decided_by", "label"})
"""Columns a review file written before they existed may lack (read as empty)."""


MAX_FIELD_CHARS = 2**26
"""A region's RLE of a large image can exceed the csv module's default limit of 131072 chars."""
csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))


class ReviewFileError(ValueError):
    pass


def _rows(reader: csv.DictReader, path: Path):
    """The reader's rows; a CSV error (e.g. a field over MAX_FIELD_CHARS) as a ReviewFileError."""
    try:
        yield from reader
    except csv.Error as err:
        raise ReviewFileError(f"{path}, line {reader.line_num}: not readable as CSV ({err})") from None


def write_review(path: str | Path, rows: Iterable[Proposal | MalformedRow]) -> None:
    """The rows as the review file (atomically); a malformed row is written as it was read."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in rows:
        if isinstance(p, MalformedRow):
            writer.writerow(p.fields)
            continue
        writer.writerow({
            "proposal_id": p.proposal_id, "image": p.image, "kind": p.kind, "class_name": p.class_name,
            "annotation_id": "" if p.annotation_id is None else p.annotation_id,
            "k": "" if p.k is None else p.k, "score": p.score, "area": p.area,
            "bbox": json.dumps(p.bbox), "decision": p.decision, "label": p.label, "decided_by": p.decided_by,
            "note": p.note,
            "region": p.region,
        })
    write_text(path, buffer.getvalue())


SHOWN_CHARS = 40
"""A bad value is quoted in an error message up to this many characters (a tampered field may
hold megabytes)."""
BBOX = re.compile(r"\[\s*\d{1,9}\s*(?:,\s*\d{1,9}\s*){3}\]", re.ASCII)
"""`bbox` as written: [x, y, width, height] of non-negative integers. Matched as text, never
parsed as JSON, so no nesting, float or overflow reaches the readers."""


def _shown(value: str) -> str:
    return repr(value) if len(value) <= SHOWN_CHARS else repr(value[:SHOWN_CHARS]) + f"... ({len(value)} chars)"


def _int(value: str, where: str, field: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ReviewFileError(f"{where}: field '{field}' must be an integer, got {_shown(value)}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ReviewFileError(f"{where}: field '{field}' must be {bound}, got {_shown(value.strip())}")
    return number


def _score(value: str, where: str) -> float:
    """A ranker's score: a finite number, or nan (a ranker with no evidence: ranks last)."""
    try:
        score = float(value)
    except ValueError:
        score = math.inf
    if math.isinf(score):
        raise ReviewFileError(f"{where}: field 'score' must be a finite number or nan, got {_shown(value)}")
    return score


@dataclass(frozen=True)
class MalformedRow:
    """A row that does not read as a proposal, kept with its fields as written so that a file
    rewritten around it (the review page saving another row) loses nothing."""
    row: int
    fields: dict[str, str]
    error: str

    @property
    def proposal_id(self) -> str:
        return self.fields["proposal_id"]


def read_review(path: str | Path) -> list[Proposal]:
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        return parse_review(handle, path)


def parse_review(handle: Iterable[str], path: str | Path) -> list[Proposal]:
    """The proposals of an open review file (`path` names it in errors); the first bad row
    refuses the whole file."""
    rows = parse_rows(handle, path)
    bad = next((r for r in rows if isinstance(r, MalformedRow)), None)
    if bad is not None:
        raise ReviewFileError(bad.error)
    return rows


def parse_rows(handle: Iterable[str], path: str | Path) -> list[Proposal | MalformedRow]:
    """Every row of an open review file in order: its proposal, or a MalformedRow naming the
    file, the row and the field that is wrong. A missing column or text that is not CSV refuses
    the whole file (ReviewFileError)."""
    path = Path(path)
    reader = csv.DictReader(handle)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL]
    if missing:
        raise ReviewFileError(f"{path}: missing column(s) {', '.join(missing)}")
    out: list[Proposal | MalformedRow] = []
    first_row: dict[str, int] = {}
    for row_number, raw in enumerate(_rows(reader, path), start=2):
        fields = {c: raw.get(c) if isinstance(raw.get(c), str) else "" for c in COLUMNS}
        where = f"{path}, row {row_number}"
        try:
            pid = fields["proposal_id"]
            if pid in first_row:
                raise ReviewFileError(f"{where}: field 'proposal_id' {_shown(pid)} appears twice (first in row "
                                      f"{first_row[pid]})")
            first_row[pid] = row_number
            out.append(_proposal(fields, where))
        except ReviewFileError as err:
            out.append(MalformedRow(row_number, fields, str(err)))
    return out


def _proposal(row: dict[str, str], where: str) -> Proposal:
    """One row's proposal; a ReviewFileError naming `where` and the field when it is not one."""
    decision = row["decision"].strip().lower()
    if decision not in DECISIONS:
        raise ReviewFileError(f"{where}: field 'decision' must be one of {', '.join(DECISIONS)}, "
                              f"got {_shown(row['decision'])}")
    kind, class_name, label = row["kind"], row["class_name"], row["label"].strip()
    if kind == LEGACY_PERPLEXED_KIND:   # written before the expert chose labels: always `perplexed`
        kind, class_name, label = UNLABELLED, _legacy_source_class(row["proposal_id"]), PERPLEXED
    if kind not in KINDS:
        raise ReviewFileError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {_shown(kind)}")
    if not BBOX.fullmatch(row["bbox"].strip()):
        raise ReviewFileError(f"{where}: field 'bbox' must be [x, y, width, height] of non-negative integers "
                              f"(at most 9 digits), got {_shown(row['bbox'])}")
    proposal = Proposal(
        proposal_id=row["proposal_id"], image=row["image"], kind=kind,
        class_name=class_name, score=_score(row["score"], where), region=row["region"],
        bbox=[int(v) for v in row["bbox"].strip()[1:-1].split(",")],
        area=_int(row["area"], where, "area"),
        annotation_id=_int(row["annotation_id"], where, "annotation_id") if kind == ENLARGE else None,
        k=_int(row["k"], where, "k", maximum=K_LIMIT) if kind == ENLARGE else None,
        decision=decision, note=row["note"], decided_by=row["decided_by"].strip(),
        label=label or (class_name if kind == ENLARGE else ""),
    )
    problem = label_problem(proposal)
    if problem:
        raise ReviewFileError(f"{where}: {problem}")
    return proposal


def _legacy_source_class(proposal_id: str) -> str:
    """The thin class a legacy `<image>/perplexed-<class>/<n>` id names."""
    return proposal_id.split("/")[-2].removeprefix("perplexed-")


def label_problem(proposal: Proposal) -> str | None:
    """Why a proposal's label is not allowed, None when it is: any label must be one its kind
    allows (`label_choices`), and an accepted proposal needs one."""
    choices = label_choices(proposal)
    if proposal.label and proposal.label not in choices:
        return f"field 'label' must be one of {', '.join(choices)}, got {_shown(proposal.label)}"
    if proposal.decision == ACCEPT and not proposal.label:
        return f"field 'label' is empty but the decision is accept: choose {' or '.join(choices)}"
    return None
