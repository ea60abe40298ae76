"""Input checks of the review routes: file names confined to configured folders, client JSON
bounded in depth, regions checked as COCO RLE of the image's size.

Every failure is a `BadInput` whose message is safe to show to the client (no paths outside
what the client sent, no stack trace); the app turns it into a 4xx answer.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from vqi.utils.nesting import MAX_JSON_DEPTH, json_depth

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BadInput(ValueError):
    """A request the app refuses; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def safe_name(name: str, what: str) -> str:
    """A plain file name (letters, digits, `._-`; no separators, no leading dot), else `BadInput`."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise BadInput(f"{what}: {name!r} is not a plain file name (letters, digits, '._-' only)")
    return name


def contained(root: str | Path, name: str, what: str) -> Path:
    """`root / name` after resolving links, refused unless it stays inside `root`."""
    root = Path(root).resolve()
    path = (root / safe_name(name, what)).resolve()
    if path.parent != root:
        raise BadInput(f"{what}: {name!r} points outside the allowed folder")
    return path


def parse_json(data: bytes | str, what: str) -> object:
    """Parse JSON sent by a client, refusing invalid text and nesting deeper than MAX_JSON_DEPTH."""
    too_deep = f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        doc = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except ValueError as err:   # not UTF-8, not JSON, or an integer past Python's 4300 digits
        raise BadInput(f"{what}: not valid UTF-8 JSON ({err})") from None
    except RecursionError:
        raise BadInput(too_deep) from None
    if json_depth(doc) > MAX_JSON_DEPTH:
        raise BadInput(too_deep)
    return doc


def rle_runs(counts: str) -> list[int] | None:
    """The run lengths of COCO compressed RLE counts (pycocotools' string format), or None when
    the text is not that format. pycocotools itself reads past the data on some bad input."""
    runs: list[int] = []
    data = counts.encode("ascii", "replace")
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data) or not 48 <= data[p] < 112:
                return None
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def check_rle(counts: object, height: int, width: int, what: str) -> str:
    """`counts` if it is COCO RLE counts of exactly a `width` x `height` image, else `BadInput`."""
    runs = rle_runs(counts) if isinstance(counts, str) else None
    if runs is None or sum(runs) != height * width:
        raise BadInput(f"{what}: not COCO RLE counts of a {width}x{height} image", 409)
    return counts
