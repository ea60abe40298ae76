"""The review file: one CSV row per proposal that an expert edits (decision, k, label, note).

CSV because an inspection engineer opens it in any spreadsheet. Reading validates every row
and names the file, the row and the field that is wrong.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable

from vqi.augment.proposals import (ACCEPT, DECISIONS, ENLARGE, KINDS, LEGACY_PERPLEXED_KIND, PENDING, PERPLEXED,
                                   REJECT, UNLABELLED, Proposal, label_choices)
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


POLICIES = ("review", "accept_all", "threshold", "dilate")
"""Decisions with no expert: `review` leaves every proposal pending; `accept_all` accepts all;
`threshold` accepts those whose ranker score is >= the threshold; `dilate` accepts every
enlargement and rejects every unlabelled region (blind dilation: the control that uses no model)."""


def decide(proposals: list[Proposal], policy: str, threshold: float, unlabelled_label: str = PERPLEXED) -> None:
    """Pre-fill decisions for a run with no expert; an accepted unlabelled region gets
    `unlabelled_label` (`perplexed`, as the paper labels them, or `thin` for its own thin class)."""
    if policy not in POLICIES:
        raise ValueError(f"augment.policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if unlabelled_label not in (PERPLEXED, "thin"):
        raise ValueError(f"augment.unlabelled_label must be perplexed or thin, not {unlabelled_label!r}")
    for proposal in proposals:
        if policy == "accept_all":
            accept = True
        elif policy == "threshold":
            accept = proposal.score >= threshold
        elif policy == "dilate":
            accept = proposal.kind == ENLARGE
        else:
            accept = None
        proposal.decision = PENDING if accept is None else ACCEPT if accept else REJECT
        if accept and proposal.kind == UNLABELLED:
            proposal.label = proposal.class_name if unlabelled_label == "thin" else PERPLEXED
        proposal.decided_by = "" if policy == "review" else f"policy:{policy}"


def write_review(path: str | Path, proposals: list[Proposal]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in proposals:
        writer.writerow({
            "proposal_id": p.proposal_id, "image": p.image, "kind": p.kind, "class_name": p.class_name,
            "annotation_id": "" if p.annotation_id is None else p.annotation_id,
            "k": "" if p.k is None else p.k, "score": p.score, "area": p.area,
            "bbox": json.dumps(p.bbox), "decision": p.decision, "label": p.label, "decided_by": p.decided_by,
            "note": p.note,
            "region": p.region,
        })
    write_text(path, buffer.getvalue())


def _int(value: str, where: str, field: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ReviewFileError(f"{where}: field '{field}' must be an integer, got {value!r}") from None
    if number < minimum:
        raise ReviewFileError(f"{where}: field '{field}' must be >= {minimum}, got {number}")
    return number


def read_review(path: str | Path) -> list[Proposal]:
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        return parse_review(handle, path)


def parse_review(handle: Iterable[str], path: str | Path) -> list[Proposal]:
    """The proposals of an open review file (`path` names it in errors)."""
    path = Path(path)
    reader = csv.DictReader(handle)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL]
    if missing:
        raise ReviewFileError(f"{path}: missing column(s) {', '.join(missing)}")
    proposals, seen = [], set()
    for row_number, row in enumerate(_rows(reader, path), start=2):
        where = f"{path}, row {row_number}"
        decision = (row["decision"] or "").strip().lower()
        if decision not in DECISIONS:
            raise ReviewFileError(f"{where}: field 'decision' must be one of {', '.join(DECISIONS)}, "
                                  f"got {row['decision']!r}")
        kind, class_name, label = row["kind"], row["class_name"], (row.get("label") or "").strip()
        if kind == LEGACY_PERPLEXED_KIND:   # written before the expert chose labels: always `perplexed`
            kind, class_name, label = UNLABELLED, _legacy_source_class(row["proposal_id"]), PERPLEXED
        if kind not in KINDS:
            raise ReviewFileError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        if row["proposal_id"] in seen:
            raise ReviewFileError(f"{where}: field 'proposal_id' {row['proposal_id']!r} appears twice")
        seen.add(row["proposal_id"])
        try:
            bbox = [int(v) for v in json.loads(row["bbox"])]
            score = float(row["score"])
        except (ValueError, TypeError) as error:
            raise ReviewFileError(f"{where}: field 'bbox' or 'score' is malformed ({error})") from None
        proposals.append(Proposal(
            proposal_id=row["proposal_id"], image=row["image"], kind=kind,
            class_name=class_name, score=score, region=row["region"], bbox=bbox,
            area=_int(row["area"], where, "area"),
            annotation_id=_int(row["annotation_id"], where, "annotation_id") if kind == ENLARGE else None,
            k=_int(row["k"], where, "k") if kind == ENLARGE else None,
            decision=decision, note=row["note"] or "", decided_by=(row.get("decided_by") or "").strip(),
            label=label or (class_name if kind == ENLARGE else ""),
        ))
        _check_label(proposals[-1], where)
    return proposals


def _legacy_source_class(proposal_id: str) -> str:
    """The thin class a legacy `<image>/perplexed-<class>/<n>` id names."""
    return proposal_id.split("/")[-2].removeprefix("perplexed-")


def _check_label(proposal: Proposal, where: str) -> None:
    """An accepted proposal needs a label its kind allows; any other label is an error too."""
    choices = label_choices(proposal)
    if proposal.label and proposal.label not in choices:
        raise ReviewFileError(f"{where}: field 'label' must be one of {', '.join(choices)}, got {proposal.label!r}")
    if proposal.decision == ACCEPT and not proposal.label:
        raise ReviewFileError(f"{where}: field 'label' is empty but the decision is accept: choose "
                              f"{' or '.join(choices)}")
