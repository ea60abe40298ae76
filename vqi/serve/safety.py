"""Input checks of the web app: paths confined to configured folders, images checked by decoding.

Every failure is a `BadInput` whose message is safe to show to the client (no paths outside
what the client sent, no stack trace); the app turns it into a 4xx answer.
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
