"""Reading a torch.save file of tensors and plain containers, never code (`weights_only=True`),
with errors that name the file and the config field instead of quoting torch's advice to load
it unsafely."""
from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be read safely."""


def _reason(err: Exception) -> str:
    text = str(err)
    blocked = re.search(r"GLOBAL (\S+)", text)
    if isinstance(err, pickle.UnpicklingError) and blocked:
        return (f"it needs Python code to load ({blocked.group(1)}); only tensors and plain "
                f"containers are read, code in a file is never run")
    if "zip archive" in text or isinstance(err, EOFError):
        return "it is truncated or corrupt (not a complete torch.save archive)"
    return f"it is not a torch.save file of tensors and plain containers ({type(err).__name__})"


def read_plain(path: str | os.PathLike, field: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU; a `WeightsFileError` naming `field` and the
    file when that fails."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, KeyError, EOFError...
        raise WeightsFileError(f"{field}: {path} cannot be read: {_reason(err)}") from None
