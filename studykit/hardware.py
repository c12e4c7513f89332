"""What machine this is: one place for the CPU name, its bf16 support and the precision "auto" resolves to.

Nothing here runs at import time and nothing needs Linux, so the package imports on Windows and macOS.
"""
from __future__ import annotations

import os
import platform
import re

import torch

__all__ = ["cpu_name", "cpu_supports_bf16", "resolve_precision", "PRECISIONS",
           "emulates_bf16", "threads_label", "hardware_label", "describe_machine",
           "run_hardware_label"]

# Set to 0 or 1 to run as if this CPU had no native bf16, or had it: every branch that depends on it, both ways.
CPU_BF16_ENV = "STUDYKIT_CPU_BF16"
# The precisions a run may ask for; every one but "auto" is also what a run records as the precision it ran in.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_name() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as lines:
            return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe_machine() -> str:
    """This machine in one line, as the notebooks print it: the GPUs, or the CPU with its cores and whether it
    has native bf16 (the kind of CPU a figure came from)."""
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"GPU: {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB"
    features, forced = _cpu_bf16_features(), _forced_cpu_bf16()
    kind = "native bf16" if features else "no native bf16"
    if forced:  # a figure taken on a forced kind must not pass for one of a real CPU of that kind
        kind += f" (forced by ${CPU_BF16_ENV}={forced})"
    elif features:
        kind += f" ({' and '.join(features)})"
    return f"CPU only: {cpu_name()}, {os.cpu_count()} cores, {kind}"


def threads_label(n: int) -> str:
    """`n` torch threads in words ("1 thread", "2 threads")."""
    return f"{n} thread{'' if n == 1 else 's'}"


def run_hardware_label(num_processes: int) -> str:
    """What a run trained on, as its summary records it: processes x the GPU, or x the CPU with this process's
    torch threads (a grid's workers share the cores, so the threads say more than the core count)."""
    if torch.cuda.is_available():
        return f"{num_processes} x {torch.cuda.get_device_name()}"
    return f"{num_processes} x CPU {cpu_name()}, {threads_label(torch.get_num_threads())}"


def hardware_label(recorded: str) -> str:
    """A run's recorded hardware as shown (runs recorded before `threads_label` said "1 threads")."""
    return re.sub(r"\b1 threads\b", "1 thread", recorded)


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX tiles), by torch's own checks.

    Without one of them oneDNN emulates bf16 in fp32, which is slower than plain fp32; so False there.
    The `torch.cpu._is_*` probes are private but are what torch itself uses; a torch without them says False.
    """
    return bool(_cpu_bf16_features())


def _forced_cpu_bf16() -> str:
    """The CPU kind $STUDYKIT_CPU_BF16 forces: "1" (native bf16), "0" (none) or "" (unset: detect). The other
    branch on purpose, for tests and benchmarks of the other kind of CPU."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced not in ("", "0", "1"):
        raise ValueError(f"{CPU_BF16_ENV}={forced!r}: use 1 (treat this CPU as having native bf16), 0 (as not having "
                         f"it) or leave it unset (detect)")
    return forced


def _cpu_bf16_features() -> tuple[str, ...]:
    forced = _forced_cpu_bf16()
    if forced:
        return ("native bf16 (forced by $STUDYKIT_CPU_BF16=1)",) if forced == "1" else ()
    if not torch.backends.mkldnn.is_available():
        return ()
    names = {"_is_avx512_bf16_supported": "AVX-512 BF16", "_is_amx_tile_supported": "AMX"}
    return tuple(label for name, label in names.items() if getattr(torch.cpu, name, lambda: False)())


def resolve_precision(precision: str) -> tuple[str, str]:
    """The precision a run uses on this machine, and why: `"auto"` becomes bf16 on GPUs that support it
    (else fp16), bf16 autocast on CPUs with native bf16 (else fp32); an explicit precision stays as it is."""
    if precision != "auto":
        return precision, "set explicitly"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: GPU supports bf16"
        return "fp16", "auto: GPU without bf16"
    features = _cpu_bf16_features()
    if features:
        return "bf16", f"auto: CPU supports {' and '.join(features)}"
    return "fp32", "auto: CPU without native bf16 (no AVX-512 BF16 or AMX; emulated bf16 is slower than fp32)"


def emulates_bf16(resolved_precision: str) -> bool:
    """Whether a run in `resolved_precision` would run bf16 on a CPU that only emulates it (several times
    slower than fp32 there): what a grid warns about before it trains such runs."""
    return resolved_precision == "bf16" and not torch.cuda.is_available() and not cpu_supports_bf16()
