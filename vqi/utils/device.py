"""Turning the config's `device` value into a torch device."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when it is available, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config `device={name}` asks for CUDA, but torch sees no CUDA device")
    return device


def device_name(device: torch.device) -> str:
    """`cpu (N threads)` or the CUDA device's name: times are only comparable on the same one."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
