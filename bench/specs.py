"""Typed specs that plugins hand to the host through the register-style hooks.

A plugin module implements any of the hooks in ``bench.hookspecs``, e.g.::

    @hookimpl
    def register_accelerators(register):
        register(AcceleratorSpec(name="vanilla", config_cls=VanillaConfig, factory=Vanilla, ...))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from bench.protocol import Accelerator, BaseModel, GeneratedBatch, MetricInfo


@dataclass(frozen=True)
class AcceleratorSpec:
    """name: what users type (``--accel name:key=val``).
    config_cls: frozen dataclass of the method's knobs (unknown keys are errors).
    factory: config -> Accelerator.
    default_sweep: option dicts the default ``migm-bench run`` includes, mild to aggressive.
    """

    name: str
    config_cls: type
    factory: Callable[[Any], Accelerator]
    description: str = ""
    default_sweep: tuple[dict[str, Any], ...] = ()
    provider: str = ""  # filled in by the plugin manager (distribution / module)


@dataclass(frozen=True)
class BaseModelSpec:
    """name: ``--model name:key=val``. factory(config, device) -> BaseModel."""

    name: str
    config_cls: type
    factory: Callable[[Any, torch.device], BaseModel]
    description: str = ""
    provider: str = ""


@dataclass
class MetricContext:
    """What a metric may compare against. ``vanilla`` is vanilla's output at the reference
    N for the same seeds and conditions (None while computing vanilla itself is fine:
    it is then compared with itself)."""

    model: BaseModel
    device: torch.device
    vanilla: GeneratedBatch | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. real-data statistics, shared across configs


class Metric(Protocol):
    info: MetricInfo

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float: ...


@dataclass(frozen=True)
class MetricSpec:
    """info: name/unit/direction/reference. factory(model) -> Metric, or raises
    ``MetricUnavailable`` when the metric cannot run for that base model."""

    info: MetricInfo
    factory: Callable[[BaseModel], Metric]
    default: bool = True  # part of the default metric set
    provider: str = ""


class MetricUnavailable(RuntimeError):
    """The metric cannot run on this base model (e.g. no real data for FID)."""
