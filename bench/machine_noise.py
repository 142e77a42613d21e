"""``migm-bench machine-noise``: how steadily this machine runs a fixed workload, before any model is timed.

It times a fixed single-thread matrix-multiply loop (the operation the base models spend their
time in) back to back for ``--seconds``, in samples of about ``--sample-ms`` each, and prints:

* the coefficient of variation (std / mean) of the samples, and of the means of blocks of 4,
  16 and 64 consecutive samples: how much longer timing units help;
* the autocorrelation of the samples at lags of 1, 5, 10 and 50: how long a slow spell lasts.
  Configurations timed further apart than that share none of it, so pairing them in rounds
  (``bench.interleave``) removes only slower drift, and what is left shrinks only with more
  rounds;
* the same CV for the thread's CPU time (``time.thread_time_ns``). When CPU time varies as much
  as wall time, the slowdowns happen while the thread runs (contention for the core's shared
  resources: a sibling hyperthread, caches, memory bandwidth of other tenants), not while it
  waits for the scheduler. pyperf's ``system tune`` attacks the host side of such noise
  (CPU isolation, fixed frequency); on a shared virtual machine that is out of reach.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench import stats
from bench.timing import timing_threads

BLOCKS = (4, 16, 64)
LAGS = (1, 5, 10, 50)


def sample_times(seconds: float, sample_s: float, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(wall, cpu) seconds of consecutive samples of a ``size`` x ``size`` float32 matmul loop at
    one thread, each sample calibrated to about ``sample_s``, for about ``seconds`` in all."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    with timing_threads(1):
        for _ in range(5):  # warm-up: allocator, caches
            a @ b
        start = time.perf_counter()
        for _ in range(20):
            a @ b
        loops = max(1, round(sample_s / ((time.perf_counter() - start) / 20)))
        wall, cpu = [], []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(wall) < 2:
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            for _ in range(loops):
                a @ b
            cpu.append((time.thread_time_ns() - c0) / 1e9)
            wall.append((time.perf_counter_ns() - w0) / 1e9)
    return np.asarray(wall), np.asarray(cpu)


def cv(x: np.ndarray) -> float:
    """Coefficient of variation of the samples, with the population std (``bench.stats.cv``)."""
    return stats.cv(x, ddof=0)


def block_cv(x: np.ndarray, block: int) -> float:
    """CV of the means of consecutive blocks of ``block`` samples (NaN with fewer than 2 blocks)."""
    n = len(x) // block
    return cv(x[: n * block].reshape(n, block).mean(axis=1)) if n >= 2 else float("nan")


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Pearson correlation of the series with itself ``lag`` samples later (NaN if too short)."""
    if len(x) <= lag + 1:
        return float("nan")
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def summary(wall: np.ndarray, cpu: np.ndarray) -> dict[str, float]:
    out = {
        "samples": len(wall),
        "mean_sample_s": float(np.mean(wall)),
        "cv_wall": cv(wall),
        "cv_cpu": cv(cpu),
    }
    out.update({f"cv_wall_block{b}": block_cv(wall, b) for b in BLOCKS})
    out.update({f"autocorr_lag{k}": autocorrelation(wall, k) for k in LAGS})
    return out


def run(args: argparse.Namespace) -> int:
    wall, cpu = sample_times(args.seconds, args.sample_ms / 1000)
    s = summary(wall, cpu)
    ms = 1000 * s["mean_sample_s"]
    print(f"{s['samples']} samples of {ms:.0f} ms (a 512 x 512 matmul loop at one thread), "
          f"{args.seconds:.0f} s in all:")  # fmt: skip
    print(f"  CV of the samples: wall {100 * s['cv_wall']:.1f} %, thread CPU time {100 * s['cv_cpu']:.1f} %")
    blocks = ", ".join(f"{b} ({b * ms / 1000:.1f} s) {100 * s[f'cv_wall_block{b}']:.1f} %" for b in BLOCKS)
    print(f"  CV of block means: {blocks}")
    lags = ", ".join(f"{k} ({k * ms / 1000:.2f} s) {s[f'autocorr_lag{k}']:.2f}" for k in LAGS)
    print(f"  autocorrelation at lag: {lags}")
    if s["cv_cpu"] > 0.5 * s["cv_wall"] and s["cv_wall"] > 0.05:
        print("  CPU time varies about as much as wall time: the thread itself runs slower at times "
              "(shared core resources), so only more timed rounds narrow the speed-ups' intervals")  # fmt: skip
    return 0
