"""Uncertainty of the numbers a benchmark compares: bootstrap intervals and stability checks.

* Speed-ups come from *paired* rounds (``bench.interleave``): in round j every configuration
  timed one batch, so r_j = vanilla's time / the configuration's time shares that round's
  machine load. The speed-up is the median of the r_j; its 95 % interval is the percentile
  bootstrap over rounds (Efron & Tibshirani 1993, ch. 13). The named option ``min``
  (``--speedup-estimator min``) takes min_j vanilla / min_j configuration instead: timing
  noise on a shared machine only ever adds time, so the fastest round is the one least
  disturbed (Chen & Revels 2016, "Robust benchmarking in noisy environments", the estimator of
  Julia's BenchmarkTools); its interval is the same bootstrap over paired rounds.
* Quality metrics that are means over images (PSNR / SSIM / token agreement vs vanilla,
  class accuracy) get the percentile bootstrap of the mean over images; set-level metrics
  (FID, KID, Inception score) get value +- 1.96 x the bootstrap standard deviation over
  image resamples (drawing with replacement biases FID upward, so its percentiles would be
  shifted; its spread is what tells how much the value moves with the image sample).
* Stability, after pyperf (``pyperf/_cli.py``, "the standard deviation is greater than 10 %
  of the mean"): the coefficient of variation of a configuration's timed batches, and the
  share of its FLOP saving the wall clock realises, which a quiet machine keeps below ~105 %.

Every resampling draws from a ``numpy.random.Generator`` seeded by the caller: the same
result files give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.config import DEFAULT_SPEEDUP_ESTIMATOR

LEVEL = 0.95  # two-sided interval level
RESAMPLES = 2000  # bootstrap resamples for cheap statistics (medians, means)
SET_RESAMPLES = 50  # set-level resamples (each recomputes FID/KID/IS); 50 keep the run in budget
Z_95 = 1.959964  # standard normal quantile at 0.975
CV_LIMIT = 0.10  # timed batches vary more than this (std / mean): unstable (pyperf's threshold)
SAVING_LIMITS = (0.5, 1.15)  # realised share of the FLOP saving outside this: unstable
MIN_FLOP_SPEEDUP = 1.2  # the share is too noisy to judge below this FLOP speed-up


@dataclass(frozen=True)
class Estimate:
    """A point value and its interval [low, high] (NaN when unknown)."""

    value: float
    low: float = math.nan
    high: float = math.nan


def resample_indices(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n) indices drawn with replacement from range(n)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic`` (applied along axis 1 of a (R, n) array) over
    the n values; the point value is the statistic of the values themselves."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan)
    point = float(statistic(x[None, :])[0])
    if x.size == 1:
        return Estimate(point, point, point)
    low, high = _percentiles(statistic(x[resample_indices(x.size, resamples, seed)]))
    return Estimate(point, low, high)


def _median(a: np.ndarray) -> np.ndarray:
    return np.median(a, axis=1)


def _mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=1)


def _paired(reference: Sequence[float], times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The rounds where both times are finite and positive, as two aligned arrays."""
    ref, own = np.asarray(reference, dtype=float), np.asarray(times, dtype=float)
    if ref.shape != own.shape:
        raise ValueError(f"paired times differ in length: {ref.shape} vs {own.shape}")
    ok = np.isfinite(ref) & np.isfinite(own) & (own > 0) & (ref > 0)
    return ref[ok], own[ok]


# each estimator's statistic of paired rounds: (R, n) reference, (R, n) own times -> (R,) speed-ups
_RESAMPLED: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "median-ratio": lambda ref, own: np.median(ref / own, axis=1),
    "min": lambda ref, own: ref.min(axis=1) / own.min(axis=1),
}


def _paired_estimate(name: str, reference: Sequence[float], times: Sequence[float], seed: int) -> Estimate:
    """Estimator ``name`` on the paired rounds, with the percentile bootstrap over rounds (round
    j's two times resampled together)."""
    ref, own = _paired(reference, times)
    if ref.size == 0:
        return Estimate(math.nan)
    stat = _RESAMPLED[name]
    point = float(stat(ref[None], own[None])[0])
    if ref.size == 1:
        return Estimate(point, point, point)
    rows = resample_indices(ref.size, RESAMPLES, seed)  # (R, n): the same rounds for both
    low, high = _percentiles(stat(ref[rows], own[rows]))
    return Estimate(point, low, high)


def paired_speedup(reference: Sequence[float], times: Sequence[float], seed: int = 0) -> Estimate:
    """Median over rounds of reference_j / times_j, with its bootstrap interval over rounds."""
    return _paired_estimate("median-ratio", reference, times, seed)


def min_speedup(reference: Sequence[float], times: Sequence[float], seed: int = 0) -> Estimate:
    """min_j reference_j / min_j times_j, with the percentile bootstrap over paired rounds
    (round j's two times resampled together, as ``paired_speedup``)."""
    return _paired_estimate("min", reference, times, seed)


# --speedup-estimator (names: bench.config.SPEEDUP_ESTIMATORS): (reference, times, seed) -> Estimate
SPEEDUP_ESTIMATORS: dict[str, Callable[..., Estimate]] = {"median-ratio": paired_speedup, "min": min_speedup}


def speedup_change(
    first: tuple[Sequence[float], Sequence[float]],
    second: tuple[Sequence[float], Sequence[float]],
    estimator: str = DEFAULT_SPEEDUP_ESTIMATOR,
    seed: int = 0,
) -> Estimate:
    """How much a speed-up moved between two independent runs: speed-up(second) / speed-up(first)
    - 1, each given as (reference times, own times) per paired round, with the percentile
    bootstrap interval that resamples each run's rounds on its own. An interval holding 0 means
    the rounds' own noise explains the move; one that excludes it, that the runs differ."""
    if estimator not in _RESAMPLED:
        raise ValueError(f"unknown speed-up estimator {estimator!r}; choose one of {', '.join(_RESAMPLED)}")
    stat = _RESAMPLED[estimator]
    (ref_a, own_a), (ref_b, own_b) = _paired(*first), _paired(*second)
    if ref_a.size == 0 or ref_b.size == 0:
        return Estimate(math.nan)
    point = float(stat(ref_b[None], own_b[None])[0] / stat(ref_a[None], own_a[None])[0] - 1)
    rows_a = resample_indices(ref_a.size, RESAMPLES, seed)  # (R, n_a)
    rows_b = resample_indices(ref_b.size, RESAMPLES, seed + 1)  # independent of the first run's
    low, high = _percentiles(stat(ref_b[rows_b], own_b[rows_b]) / stat(ref_a[rows_a], own_a[rows_a]) - 1)
    return Estimate(point, low, high)


def speedup(
    reference: Sequence[float],
    times: Sequence[float],
    estimator: str = DEFAULT_SPEEDUP_ESTIMATOR,
    seed: int = 0,
) -> Estimate:
    """The speed-up of ``times`` over ``reference`` (paired per round) by ``estimator``."""
    if estimator not in SPEEDUP_ESTIMATORS:
        raise ValueError(
            f"unknown speed-up estimator {estimator!r}; choose one of {', '.join(SPEEDUP_ESTIMATORS)}"
        )
    return SPEEDUP_ESTIMATORS[estimator](reference, times, seed=seed)


def median_interval(values: Sequence[float], seed: int = 0) -> Estimate:
    """Median with its bootstrap interval (e.g. latency per image over rounds)."""
    return bootstrap(values, _median, seed=seed)


def mean_interval(values: Sequence[float], seed: int = 0) -> Estimate:
    """Mean with its bootstrap interval (per-image quality values)."""
    return bootstrap(values, _mean, seed=seed)


def spread_interval(value: float, resampled: Sequence[float]) -> Estimate:
    """value +- 1.96 x the standard deviation of the resampled values (set-level metrics)."""
    r = np.asarray(resampled, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return Estimate(value)
    half = Z_95 * float(r.std(ddof=1))
    return Estimate(value, value - half, value + half)


def cv(values: Sequence[float], ddof: int = 1) -> float:
    """Coefficient of variation std / mean (sample std; ``ddof=0``: population std); NaN for
    fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2 or x.mean() == 0:
        return math.nan
    return float(x.std(ddof=ddof) / x.mean())


def saving_realised(speedup: float, flop_speedup: float) -> float:
    """Share of the FLOP saving the wall clock realises: (1 - 1/speedup) / (1 - 1/flop_speedup).

    1 means latency fell exactly as FLOPs did; NaN when the configuration saves no FLOPs."""
    if not (flop_speedup > 1 and speedup > 0):
        return math.nan
    return (1 - 1 / speedup) / (1 - 1 / flop_speedup)


def timing_problems(batch_cv: float, speedup: float, flop_speedup: float) -> list[str]:
    """Why a configuration's timing is not to be trusted (empty: it looks stable)."""
    problems = []
    if batch_cv > CV_LIMIT:
        problems.append(f"timed batches vary by {100 * batch_cv:.0f} % (CV; limit {100 * CV_LIMIT:.0f} %)")
    share = saving_realised(speedup, flop_speedup)
    low, high = SAVING_LIMITS
    if flop_speedup >= MIN_FLOP_SPEEDUP and not low <= share <= high:
        problems.append(
            f"wall clock realises {100 * share:.0f} % of the FLOP saving "
            f"(expected {100 * low:.0f}-{100 * high:.0f} %)"
        )
    return problems


def intervals_separate(a: Estimate, b: Estimate) -> bool:
    """True when a is surely above b: a's interval lies wholly above b's (a point with no
    interval counts as the interval [value, value])."""
    a_low = a.low if math.isfinite(a.low) else a.value
    b_high = b.high if math.isfinite(b.high) else b.value
    return a_low > b_high
