"""What machine this is: one place for the CPU name and a one-line hardware description.

Nothing here runs at import time and nothing needs Linux, so the package imports on Windows and macOS.
"""
from __future__ import annotations

import os
import platform

__all__ = ["cpu_name", "describe_hardware"]


def cpu_name() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as lines:
            return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe_hardware() -> str:
    """One line: the GPUs if torch sees any, else the CPU with its core and thread counts."""
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB"
    return f"CPU only: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
