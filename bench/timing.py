"""Honest wall-clock timing and peak memory.

Timing follows TorchBench (pytorch/benchmark, ``torchbenchmark/util/experiment/metrics.py``,
``get_latencies``): a fixed number of warm-up calls, then every replicate is wrapped in a
device synchronize and ``time.perf_counter_ns()`` on both sides; every replicate is kept
and summarised by its median and inter-quartile range (the median is robust to the odd
slow replicate, cf. ``torch.utils.benchmark.Timer.blocked_autorange``).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` after a reset of the peak
statistics (tensor memory only). On CPU, the *process peak resident set size* (``VmHWM`` in
``/proc/self/status``), reset beforehand through ``/proc/self/clear_refs`` where the kernel
allows it; where it does not, the value is the peak since process start (an upper bound),
and where ``/proc`` is missing, ``resource.getrusage(...).ru_maxrss``.

Freed memory kept (``keep_freed_memory``): glibc's malloc gives freed memory back to the
kernel (heap trimming, and ``munmap`` of blocks above its mmap threshold) and the next
allocation of it page-faults it in again, zero-filled. How much a step re-faults depends
on what ran before it, so it is not a cost of the step itself; timing commands ask malloc
to keep what it has instead (PyTorch's CPU tuning guide swaps in jemalloc/TCMalloc for the
same reason, ``recipes_source/recipes/tuning_guide.py``, "Switch Memory allocator").
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU, where ops are synchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Stopwatch:
    """Elapsed nanoseconds of the last ``timed`` block."""

    ns: int = 0

    @property
    def seconds(self) -> float:
        return self.ns / 1e9


@contextmanager
def timed(device: torch.device | str) -> Iterator[Stopwatch]:
    """``with timed(device) as sw: work()`` -> ``sw.ns``: synchronize, perf_counter_ns,
    work, synchronize, perf_counter_ns. Only the block is timed."""
    watch = Stopwatch()
    synchronize(device)
    start = time.perf_counter_ns()
    yield watch
    synchronize(device)
    watch.ns = time.perf_counter_ns() - start


def time_replicates(
    fn: Callable[[], Any], device: torch.device | str, replicates: int = 5, warmup: int = 1
) -> list[int]:
    """Call ``fn`` ``warmup`` times untimed, then ``replicates`` timed times; returns
    every replicate's elapsed nanoseconds."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(replicates):
        with timed(device) as watch:
            fn()
        out.append(watch.ns)
    return out


def interleaved_replicates(
    calls: dict[str, Callable[[], Any]], device: torch.device | str, replicates: int = 5, warmup: int = 1
) -> dict[str, list[int]]:
    """``time_replicates`` for several calls side by side: each is warmed up, then every
    replicate times each call once in turn (the order reversed every other replicate, so no
    call always follows the same one). Returns every replicate's nanoseconds per call name;
    replicate j of two calls ran back to back, so their ratio is a paired one (like the
    per-round speed-ups of ``bench.interleave``), untouched by load that drifts between
    replicates."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    for j in range(replicates):
        for name in names if j % 2 == 0 else names[::-1]:
            with timed(device) as watch:
                calls[name]()
            out[name].append(watch.ns)
    return out


def median(values: Sequence[float]) -> float:
    """Median; NaN for no values."""
    return float(statistics.median(values)) if len(values) else float("nan")


def iqr(values: Sequence[float]) -> float:
    """Inter-quartile range Q3 - Q1 (linear interpolation between order statistics, as
    numpy's default percentile); 0 for a single value, NaN for none."""
    if not len(values):
        return float("nan")
    if len(values) == 1:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return float(q[2] - q[0])


# ------------------------------------------------------------------------- memory
M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel
    (see the module docstring): no heap trimming, and blocks up to 32 MiB come from the heap
    rather than from ``mmap``. Process-wide and permanent; the heap stays at its peak size.
    True when applied; False where the C library is not glibc (nothing changed).

    Why it matters: on the fashion model (50 rows, one thread) a full forward page-faults
    between about 2k and 40k pages (some 2 us each, kernel time), depending on what the heap
    looked like when malloc last trimmed it; full steps that follow cheap shortcut steps faulted
    2k to 30k pages more than full steps that follow full steps, so without it a schedule that
    mixes step kinds pays faults a run of full steps does not. Kept, steps fault no pages.
    """
    global _FREED_MEMORY_KEPT
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        )
    except (OSError, AttributeError):
        return False
    _FREED_MEMORY_KEPT = _FREED_MEMORY_KEPT or kept
    return kept


_FREED_MEMORY_KEPT = False  # set once ``keep_freed_memory`` succeeded in this process


def freed_memory_kept() -> bool:
    """Whether this process keeps freed memory (recorded with every run's environment)."""
    return _FREED_MEMORY_KEPT


def minor_faults() -> int:
    """Minor page faults of this process so far (``ru_minflt``): memory touched for the first
    time since the kernel (re)mapped it."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _read_vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_vm_hwm() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0). False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kB


class PeakMemory:
    """Peak memory of a region, in MiB (see the module docstring for what is measured)::

    with PeakMemory(device) as mem:
        work()
    mem.mb, mem.kind   # kind: "cuda_max_allocated" | "process_peak_rss" | "process_peak_rss_since_start"
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.mb = float("nan")
        self.kind = ""

    def __enter__(self) -> PeakMemory:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "process_peak_rss" if _reset_vm_hwm() else "process_peak_rss_since_start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        kb = _read_vm_hwm_kb()
        if kb is None:
            self.kind = "process_peak_rss_since_start"
            self.mb = _ru_maxrss_mb()
        else:
            self.mb = kb / 1024


def device_name(device: torch.device | str) -> str:
    """Human-readable name of the device (GPU model, or the CPU model)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return cpu_name()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def invocation_environment(device: torch.device | str) -> dict[str, Any]:
    """What a timing depends on, recorded with every row an invocation times: host, torch
    version, intra-op threads, device and the 1-minute load average when it started (a load
    above the core count means other work competed for the CPU)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        load = float("nan")
    return {
        "host": platform.node(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(torch.device(device)),
        "cpu_count": os.cpu_count(),
        "load_avg_start": load,
    }


@contextmanager
def timing_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads (0: torch's default, one per
    core), then restore the previous count. Yields the count in use."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
