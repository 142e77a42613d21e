"""The measurement of one configuration after the timed rounds: its tidy result rows and its
summary row.

In order: the latency of every round (with the reference's time in the same round, the
pair of the speed-up), the model-call counts and decode times of every batch, FLOPs per
image counted once on a small batch, peak memory over its batches, then the quality metrics
on all images with their bootstrap intervals. The summary adds the paired speed-up with its
95 % interval (``bench.stats``) and a ``timing`` flag (ok / unstable: batch-time CV or the
realised share of the FLOP saving out of range). The result files keep their column names
whichever accelerator is the reference: ``vanilla_latency_*`` hold the reference's times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from bench import stats
from bench.config import DEFAULT_SPEEDUP_ESTIMATOR
from bench.contestant import ConfigRun, SamplingSetup
from bench.guards import error_line
from bench.metric_set import AGAINST_REFERENCE, MetricSet, no_reference
from bench.protocol import GeneratedBatch
from bench.results import ConfigKey, RunStore
from bench.specs import MetricContext
from bench.timing import iqr, median


@dataclass
class Measured:
    """One configuration's measurement rows, summary row and outputs (all images)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    generated: GeneratedBatch


class _Rows:
    """The tidy measurement rows of one configuration (``bench.results.MEASUREMENT_COLUMNS``)."""

    def __init__(self, run_id: str, base_model: str, key: ConfigKey, steps: int | None, seed: int) -> None:
        self.fixed = {"run_id": run_id, "base_model": base_model, "accelerator": key[0],
                      "config_tag": key[1], "steps": steps}  # fmt: skip
        self.seed = seed
        self.rows: list[dict[str, Any]] = []

    def add(self, metric: str, value: float, unit: str, replicate: int = 0, seed: int | None = None,
            higher: bool = False, reference: str = "none") -> None:  # fmt: skip
        self.rows.append({
            **self.fixed, "seed": self.seed if seed is None else seed, "replicate": replicate, "metric": metric,
            "value": float(value), "unit": unit, "higher_is_better": higher, "reference": reference,
        })  # fmt: skip


class Measurer:
    """Measures the configurations of one invocation against its reference ``reference_key``.

    The runner sets ``reference_times`` (the reference's per-round latency in this
    invocation, None if it failed) after the rounds and ``reference_outputs`` (what the
    quality metrics pair with) once the reference's outputs are known."""

    def __init__(
        self,
        setup: SamplingSetup,
        store: RunStore,
        base_model: str,
        metrics: MetricSet,
        reference_key: ConfigKey,
        environment: dict[str, Any],
        batch_size: int,
        speedup_estimator: str = DEFAULT_SPEEDUP_ESTIMATOR,
    ) -> None:
        self.setup, self.store, self.base_model, self.metrics = setup, store, base_model, metrics
        self.reference_key = reference_key
        self.environment = environment  # the columns of the invocation that timed the rows
        self.batch_size = batch_size
        self.speedup_estimator = speedup_estimator  # bench.stats.SPEEDUP_ESTIMATORS
        self.reference_times: list[float] | None = None
        self.reference_outputs: GeneratedBatch | None = None
        self._reference_flops: float | None = None

    def measure(self, run: ConfigRun) -> Measured:
        """The steps, in order: timing rows, cost rows, quality metrics, the summary row."""
        rows = _Rows(self.store.dir.name, self.base_model, run.key, run.steps, self.setup.seed)
        self._add_timing_rows(rows, run)
        flops = self._add_cost_rows(rows, run)
        generated = run.generated()
        quality, missing, intervals = self._quality(rows, run, generated)
        summary = self._summary(run, flops, quality, missing, intervals)
        return Measured(rows.rows, summary, generated)

    def failed_summary(self, run: ConfigRun) -> dict[str, Any]:
        summary = self.summary_base(run)
        summary.update(status="failed", error=error_line(run.error), **self.environment)
        return summary

    def summary_base(self, run: ConfigRun) -> dict[str, Any]:
        return {
            "accelerator": run.key[0],
            "config_tag": run.key[1],
            "steps": run.steps if run.steps is not None else math.nan,
            "spec": run.conf.spec,
            "images": len(self.setup.cond),
        }

    # ----------------------------------------------------------------- the steps
    def _add_timing_rows(self, rows: _Rows, run: ConfigRun) -> None:
        """Latency per round (and the reference's in the same round), counts and decode time per batch."""
        seed, ref_times = self.setup.seed, self.reference_times
        for r, (j, latency) in enumerate(zip(run.batch_of_round, run.latencies)):
            rows.add("latency_s_per_image", latency, "s", r, seed + j)
            if ref_times is not None:  # the reference's time in the same round: the pair of the speed-up
                rows.add(
                    "vanilla_latency_s_per_image", ref_times[r], "s", r, seed + j, reference=AGAINST_REFERENCE
                )
        for j, counts in enumerate(run.counts):
            for name, value in counts.items():
                rows.add(name, value, "fraction" if name == "partial_coverage" else "calls", j, seed + j)
        for j, value in enumerate(run.decode_times):
            rows.add("decode_s_per_image", value, "s", j, seed + j)

    def _add_cost_rows(self, rows: _Rows, run: ConfigRun) -> float:
        """FLOPs per image (counted once, on a small batch) and peak memory; returns the FLOPs."""
        flops = run.flops_per_image()
        rows.add("flops_per_image", flops, "FLOP")
        rows.add("peak_mem_mb", run.peak_mb, "MiB")
        return flops

    def _quality(
        self, rows: _Rows, run: ConfigRun, generated: GeneratedBatch
    ) -> tuple[dict[str, tuple[float, Any]], dict[str, str], dict[str, Any]]:
        """(values, missing, intervals) of the quality metrics, and their rows (one per image
        too when the metric is a mean over images)."""
        reference = generated if run.key == self.reference_key else self.reference_outputs
        ctx = MetricContext(self.setup.model, self.setup.device, vanilla=reference, cache=self.metrics.cache)
        values, missing = self.metrics.compute(generated, ctx, self.store, run.conf.spec)
        intervals = self.metrics.intervals(generated, ctx, values, self.setup.seed)
        seed = self.setup.seed
        for name, (value, info) in values.items():
            rows.add(name, value, info.unit, higher=info.higher_is_better, reference=info.reference)
            for i, v in enumerate(getattr(value, "per_image", ())):  # image i was sampled with seed + i // b
                rows.add(f"{name}_per_image", v, info.unit, i, seed + i // self.batch_size, info.higher_is_better,
                         info.reference)  # fmt: skip
        return values, missing, intervals

    def _summary(
        self,
        run: ConfigRun,
        flops: float,
        quality: dict[str, tuple[float, Any]],
        missing: dict[str, str],
        intervals: dict[str, Any],
    ) -> dict[str, Any]:
        """The summary row: timing, costs, mean counts, metric values and intervals, status."""
        summary = self.summary_base(run)
        mean_counts = {k: sum(c[k] for c in run.counts) / len(run.counts) for k in run.counts[0]}
        timing = self._timing_summary(run, flops)
        for col in ("speedup", "flop_speedup"):
            if run.key != self.reference_key and math.isnan(timing[col]):
                missing[col] = no_reference(self.reference_key[0])
        summary.update(
            **timing,
            flops_per_image=flops,
            peak_mem_mb=run.peak_mb,
            decode_s_per_image=median(run.decode_times),
            status="partial" if missing else "ok",
            error="",
            metric_errors=json.dumps(missing) if missing else "",
            **mean_counts,
            **{name: float(value) for name, (value, _) in quality.items()},
            **intervals,
            **self.environment,
        )
        return summary

    def _timing_summary(self, run: ConfigRun, flops: float) -> dict[str, Any]:
        """Latency, paired speed-up with intervals, and the stability flag of one configuration."""
        seed, ref_times = self.setup.seed, self.reference_times
        latency = stats.median_interval(run.latencies, seed=seed)
        if ref_times is None:  # the reference failed in this invocation: nothing to pair with
            speedup = stats.Estimate(math.nan)
            ref_latency = math.nan
        else:
            speedup = stats.speedup(ref_times, run.latencies, self.speedup_estimator, seed=seed)
            ref_latency = median(ref_times)
        if run.key == self.reference_key:
            self._reference_flops = flops
        ref_flops = self._stored_reference_flops()
        flop_speedup = ref_flops / flops if flops > 0 else math.nan
        batch_cv = stats.cv(run.latencies)
        problems = stats.timing_problems(batch_cv, speedup.value, flop_speedup)
        return {
            "latency_s_median": latency.value,
            "latency_s_iqr": iqr(run.latencies),
            "latency_s_ci_low": latency.low,
            "latency_s_ci_high": latency.high,
            "latency_cv": batch_cv,
            "rounds": len(run.latencies),
            "speedup": speedup.value,
            "speedup_ci_low": speedup.low,
            "speedup_ci_high": speedup.high,
            "speedup_estimator": self.speedup_estimator,
            "vanilla_latency_s_median": ref_latency,
            "flop_speedup": flop_speedup,
            "saving_realised": stats.saving_realised(speedup.value, flop_speedup),
            "timing": "unstable" if problems else "ok",
            "timing_note": "; ".join(problems),
        }

    def _stored_reference_flops(self) -> float:
        """The reference's FLOPs per image: counted in this invocation, else the stored value
        (FLOPs are deterministic, unlike times)."""
        if self._reference_flops is None:
            ref = self.store.summary_row(self.reference_key)
            ok = ref is not None and ref.get("status") in ("ok", "partial")
            self._reference_flops = float(ref["flops_per_image"]) if ok else math.nan
        return self._reference_flops
