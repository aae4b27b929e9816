"""The line every `swarm node` logs as it exits: its peak memory, host and GPU.

Kept stable: benchmarks and tests/gpu parse it with PEAK_LINE. It gives the process's peak resident
memory (getrusage's ru_maxrss) and, when it used CUDA, its peak GPU memory as torch's caching
allocator counts it (max_memory_allocated and max_memory_reserved; the CUDA context itself is not
included) and its cap: the process's memory fraction x the device's total memory (fraction 1 when
no SWARM_GPU_FRACTION capped it). MiB are floored, so reserved <= cap holds in the line as in bytes:

    swarm node worker-0: peak RSS 412 MiB
    swarm node worker-1: peak RSS 1630 MiB, cuda:0 peak allocated 802 MiB, peak reserved 1024 MiB, \
cap 71568 MiB (0.5 x 143137 MiB)

(one line; the backslash only wraps it here).
"""

from __future__ import annotations

import os
import re
import resource
import sys
from dataclasses import dataclass

import torch

from swarm_contract.spec import SpecError
from swarm_worker.node.device import gpu_fraction

#: The exit line (module docstring); the GPU groups are None for a CPU node.
PEAK_LINE = re.compile(
    r"swarm node (?P<node>\S+): peak RSS (?P<rss>\d+) MiB(?:, (?P<device>cuda:\d+) "
    r"peak allocated (?P<allocated>\d+) MiB, peak reserved (?P<reserved>\d+) MiB, "
    r"cap (?P<cap>\d+) MiB \((?P<fraction>[0-9.e-]+) x (?P<total>\d+) MiB\))?$"
)
MIB = 2**20


@dataclass(frozen=True)
class GpuPeak:
    """Peak GPU memory of a process, in bytes, and its share of the device."""

    device: int
    allocated: int
    reserved: int
    total: int
    fraction: float


def format_peak_line(node_id: str, rss_mib: int, gpu: GpuPeak | None) -> str:
    line = f"swarm node {node_id}: peak RSS {rss_mib} MiB"
    if gpu is None:
        return line
    cap = int(gpu.fraction * gpu.total) // MIB
    return (
        f"{line}, cuda:{gpu.device} peak allocated {gpu.allocated // MIB} MiB, "
        f"peak reserved {gpu.reserved // MIB} MiB, cap {cap} MiB ({gpu.fraction:g} x {gpu.total // MIB} MiB)"
    )


def peak_rss_mib() -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (MIB if sys.platform == "darwin" else 1024)


def gpu_peak() -> GpuPeak | None:
    """This process's GPU peaks on its current device; None when it never initialised CUDA, or
    when CUDA fails to answer (a process ending on a CUDA error still logs its RSS)."""
    if not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return None
    try:
        device = torch.cuda.current_device()
        # The cap the allocator enforces; a torch that cannot report it: the share node/device.py set.
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        fraction = float(get_fraction(device)) if get_fraction is not None else _env_fraction()
        return GpuPeak(
            device=device,
            allocated=torch.cuda.max_memory_allocated(device),
            reserved=torch.cuda.max_memory_reserved(device),
            total=torch.cuda.get_device_properties(device).total_memory,
            fraction=fraction,
        )
    except RuntimeError:  # torch's CUDA errors (AcceleratorError and the like) are RuntimeErrors
        return None


def _env_fraction() -> float:
    try:
        return gpu_fraction(os.environ) or 1.0
    except SpecError:  # refused at start already; the exit line must not fail
        return 1.0


def peak_memory_line(node_id: str) -> str:
    """The exit line for this process so far."""
    return format_peak_line(node_id, peak_rss_mib(), gpu_peak())


def parse_peak_line(text: str) -> dict[str, str | None] | None:
    """The fields of the last exit line in `text` (a node's log), None when there is none."""
    found = [m for m in (PEAK_LINE.search(line) for line in text.splitlines()) if m is not None]
    return found[-1].groupdict() if found else None
