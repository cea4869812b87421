"""Where PyTorch runs: the device (`auto`, `cpu`, `cuda`) and the CPU threads, both taken from the machine.

`machine_threads()` counts the cores this process may use (`os.sched_getaffinity`, so a container's or
`taskset`'s limit counts, else `os.cpu_count()`); `resolve_device("auto")` is CUDA when PyTorch sees a GPU,
else the CPU. `configure_torch` applies both once per process and returns the device.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from ground.errors import TandemError

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def machine_threads() -> int:
    """Cores available to this process (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(choice: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU; `cuda` without a GPU is a clear error."""
    if choice not in DEVICE_CHOICES:
        raise TandemError(f"unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TandemError("--device cuda: PyTorch sees no CUDA GPU here (use auto or cpu)")
        return torch.device("cuda")
    return torch.device("cpu")


def configure_torch(device: str = "auto", threads: int | None = None) -> torch.device:
    """Set PyTorch's CPU threads (`threads`, default: every available core) and return the resolved device."""
    torch.set_num_threads(max(1, threads or machine_threads()))
    return resolve_device(device)
