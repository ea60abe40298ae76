"""Input checks of the inspection app: the Host header against DNS rebinding, uploaded images
checked by decoding. A failure is a `BadInput` (vqi.review.safety), answered with its 4xx code."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from vqi.review.safety import BadInput

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


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
