"""One page of the review file's rows, filtered and sorted on the server, so the review page stays
fast with thousands of proposals: the browser only ever holds one page.

Query parameters (all optional; none at all gives every row in file order, as before paging):
  kind, class       keep rows of this kind (`enlarge`, `unlabelled`) / class name
  decision          keep rows with this decision (`pending`, `accept`, `reject`)
  pending           `1`/`true`: pending rows only (the same as decision=pending)
  decided_by        `expert`, `policy` (any `policy:<name>`) or `none` (nobody decided yet)
  sort, order       `file` (the file's order, default), `score` (nan: the lowest), `area`, `image`,
                    `decision`, `id`; `asc` (default) or `desc`
  offset, limit     the page: rows [offset, offset + limit); limit 1..MAX_LIMIT
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from vqi.augment.proposals import DECISIONS, KINDS, Proposal
from vqi.review.file import MalformedRow
from vqi.review.safety import BadInput
from vqi.review.store import EXPERT, as_row

MAX_LIMIT = 500
MAX_MALFORMED_SHOWN = 20
SORT_KEYS = {
    "file": None,
    "score": lambda p: -math.inf if math.isnan(p.score) else p.score,
    "area": lambda p: p.area,
    "image": lambda p: (p.image, p.proposal_id),
    "decision": lambda p: (DECISIONS.index(p.decision), p.proposal_id),
    "id": lambda p: p.proposal_id,
}
DECIDERS = ("expert", "policy", "none")


def _choice(args: Mapping[str, str], name: str, valid: tuple[str, ...]) -> str | None:
    value = args.get(name, "")
    if value == "":
        return None
    if value not in valid:
        raise BadInput(f"query parameter '{name}' must be one of {', '.join(valid)}, got {value!r}")
    return value


def _integer(args: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    value = args.get(name, "")
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"query parameter '{name}' must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise BadInput(f"query parameter '{name}' must be from {low} to {high}, got {number}")
    return number


def decider(p: Proposal) -> str:
    """`expert`, `policy` or `none`: who set the row's decision."""
    if p.decided_by == EXPERT:
        return "expert"
    return "policy" if p.decided_by.startswith("policy:") else "none"


def query(proposals: list[Proposal], args: Mapping[str, str]) -> dict:
    """Counts over the whole file, the filter's match count, and the requested page of rows."""
    kind = _choice(args, "kind", KINDS)
    classes = tuple(sorted({p.class_name for p in proposals}))
    class_name = args.get("class", "") or None
    if class_name is not None and class_name not in classes:
        raise BadInput(f"query parameter 'class': no proposal of class {class_name!r}; "
                       f"present: {', '.join(classes) or 'none'}")
    decision = _choice(args, "decision", DECISIONS)
    if args.get("pending", "").lower() in ("1", "true", "yes", "on"):
        if decision not in (None, "pending"):
            raise BadInput(f"query parameters 'pending' and 'decision={decision}' contradict each other")
        decision = "pending"
    by = _choice(args, "decided_by", DECIDERS)
    sort = _choice(args, "sort", tuple(SORT_KEYS)) or "file"
    order = _choice(args, "order", ("asc", "desc")) or "asc"
    offset = _integer(args, "offset", 0, 0, 10**9)
    limit = _integer(args, "limit", None, 1, MAX_LIMIT)

    rows = [p for p in proposals if (kind is None or p.kind == kind)
            and (class_name is None or p.class_name == class_name)
            and (decision is None or p.decision == decision) and (by is None or decider(p) == by)]
    if SORT_KEYS[sort] is not None:
        rows.sort(key=SORT_KEYS[sort], reverse=order == "desc")
    elif order == "desc":
        rows.reverse()
    page = rows[offset:] if limit is None else rows[offset:offset + limit]
    return {
        "counts": {d: sum(p.decision == d for p in proposals) for d in DECISIONS},
        "decided_by": {d: sum(decider(p) == d for p in proposals) for d in DECIDERS},
        "total": len(proposals), "matched": len(rows), "offset": offset, "limit": limit,
        "facets": {"kinds": sorted({p.kind for p in proposals}), "classes": list(classes)},
        "proposals": [as_row(p) | {"decider": decider(p)} for p in page],
    }


def malformed_rows(rows: list[MalformedRow], path: Path) -> dict:
    """How many rows of the file do not read, and the first few: row, proposal id and why."""
    return {"count": len(rows), "rows": [{"row": r.row, "proposal_id": r.proposal_id[:200],
                                          "error": r.error.replace(str(path), path.name)}
                                         for r in rows[:MAX_MALFORMED_SHOWN]]}
