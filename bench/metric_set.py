"""The quality metrics of a sweep: checked before anything runs, then computed for every
configuration with their bootstrap intervals. A failing metric fails alone (the row keeps
the others); a metric that turns out unavailable is skipped for the rest of the run."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from bench.guards import NonFiniteError, check_finite_value, error_line
from bench.metrics import metric_interval
from bench.plugins import PluginManager
from bench.protocol import BaseModel, GeneratedBatch
from bench.provenance import now
from bench.results import CI_HIGH, CI_LOW, RunStore
from bench.specs import MetricContext, MetricUnavailable, MetricValue
from bench.sweep import SweepError

# MetricInfo.reference of the metrics that compare with the sweep reference's outputs.
AGAINST_REFERENCE = "vanilla"


def no_reference(reference: str) -> str:
    """Why a value against the reference (accelerator name ``reference``) is missing."""
    return f"no successful {reference} reference in this run (rerun with --retry-failed once {reference} succeeds)"


class MetricSet:
    """The metrics ``names`` (in order, once each) of one sweep on one base model; ``reference``
    names the sweep's reference accelerator (in messages)."""

    def __init__(self, manager: PluginManager, names: Sequence[str], reference: str) -> None:
        self.manager, self.reference = manager, reference
        self.names = list(dict.fromkeys(names))
        self.objects: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}  # name -> why it has no value in this run
        self.cache: dict[str, Any] = {}  # MetricContext.cache, shared by all configurations
        self.ask_model: list[str] = []  # unavailable here unless the base model supplies what they need
        for name in self.names:
            spec = manager.get_metric(name)  # unknown names raise with suggestions
            reason = spec.unavailable()
            if reason and spec.model_check is not None:
                self.ask_model.append(name)
            elif reason:  # e.g. a weights file not given: fail now, not after generating
                raise SweepError(f"metric {name!r} is unavailable: {reason}")

    def prepare(self, model: BaseModel, images: int) -> None:
        """Build every metric and check its preconditions before any sampling."""
        for name in self.ask_model:  # e.g. clip_score without $MIGM_CLIP_WEIGHTS: the model's own CLIP?
            reason = self.manager.get_metric(name).model_check(model)
            if reason:
                raise SweepError(f"metric {name!r} is unavailable: {reason}")
        for name in self.names:
            try:
                metric = self.manager.make_metric(name, model)
            except MetricUnavailable as why:
                self._skip(name, why)
                continue
            except (KeyboardInterrupt, MemoryError):
                raise
            except BaseException as err:  # noqa: BLE001
                raise SweepError(f"metric {name} cannot run: {error_line(err, where=False)}") from None
            need = int(getattr(metric, "min_images", 1))
            if images < need:
                raise SweepError(
                    f"metric {name} needs at least {need} images per configuration, got {images}; "
                    "raise --images (and --limit) or leave the metric out (--metrics)"
                )
            self.objects[name] = metric

    def _skip(self, name: str, why: MetricUnavailable) -> None:
        self.skipped[name] = str(why)
        tqdm.write(f"migm-bench: metric {name} skipped: {why}", file=sys.stderr)

    def compute(
        self, generated: GeneratedBatch, ctx: MetricContext, store: RunStore, spec: str
    ) -> tuple[dict[str, tuple[float, Any]], dict[str, str]]:
        """(values, missing): each metric's finite value (with its info), or why it has none.
        Metrics against the reference's outputs need a successful reference (``ctx.vanilla``)."""
        out: dict[str, tuple[float, Any]] = {}
        missing: dict[str, str] = {}
        for name in self.names:
            if name in self.skipped:
                continue
            metric = self.objects[name]
            if metric.info.reference == AGAINST_REFERENCE and ctx.vanilla is None:
                missing[name] = no_reference(self.reference)
                continue
            try:
                value = _finite(name, metric.compute(generated, ctx))
            except MetricUnavailable as why:
                self._skip(name, why)
                continue
            except (Exception, SystemExit) as err:  # noqa: BLE001 (this metric fails; the row keeps the rest)
                store.log_error(f"[{now()}] {spec}: metric {name}\n{traceback.format_exc()}")
                missing[name] = error_line(err)
                tqdm.write(f"migm-bench: {spec}: metric {name} failed: {missing[name]}", file=sys.stderr)
                continue
            out[name] = (value, metric.info)
        return out, missing

    def intervals(
        self, generated: GeneratedBatch, ctx: MetricContext, values: dict[str, tuple[float, Any]], seed: int
    ) -> dict[str, Any]:
        """{metric_ci_low: .., metric_ci_high: ..} over image resamples (``bench.metrics.metric_interval``)."""
        out: dict[str, Any] = {}
        for name, (value, _info) in values.items():
            ci = metric_interval(self.objects[name], generated, ctx, value, seed=seed)
            out[f"{name}{CI_LOW}"], out[f"{name}{CI_HIGH}"] = ci.low, ci.high
        return out


def _finite(name: str, value: Any) -> float | MetricValue:
    """A metric's value, checked: NaN / inf means the metric failed, never ok."""
    check_finite_value(name, value)
    if isinstance(value, MetricValue):
        if not bool(torch.isfinite(value.per_image).all()):
            raise NonFiniteError(f"metric {name}: NaN/inf in its per-image values")
        return value
    return float(value)
