"""Input checks of the web app: paths confined to configured folders, images checked by decoding.

Every failure is a `BadInput` whose message is safe to show to the client (no paths outside
what the client sent, no stack trace); the app turns it into a 4xx answer.
"""
from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vqi.utils.nesting import MAX_JSON_DEPTH, json_depth

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


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


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Decode uploaded bytes to an H x W x 3 uint8 RGB array, refusing non-images and bombs."""
    if not data:
        raise BadInput(f"{what}: the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise BadInput(f"{what}: {width}x{height} pixels is more than the limit of "
                                   f"{max_pixels}", status=413)
                img.load()
                rgb = np.asarray(img.convert("RGB"))
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise BadInput(f"{what}: not a readable image ({type(err).__name__})") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
        raise BadInput(f"{what}: the image must be at least 8x8 pixels, got {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


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


def host_name(header: str) -> str:
    """The name part of a Host header (`name`, `name:port`, `[v6]:port`), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def check_host(header: str, allowed: frozenset[str]) -> None:
    """Refuse a Host header outside loopback and `allowed`: a page on another site that rebinds
    its name to 127.0.0.1 (DNS rebinding) sends its own name, so it cannot read or edit here."""
    name = host_name(header)
    if name not in LOOPBACK_HOSTS and name not in allowed:
        raise BadInput(f"host {name!r} is not served here; add it to serve.allowed_hosts", 421)


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
