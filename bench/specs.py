"""Typed specs that plugins hand to the host through the register-style hooks.

A plugin module implements any of the hooks in ``bench.hookspecs``, e.g.::

    @hookimpl
    def register_accelerators(register):
        register(AcceleratorSpec(name="vanilla", config_cls="accelerators.vanilla:VanillaConfig",
                                 factory="accelerators.vanilla:Vanilla", ...))

``config_cls``, ``factory``, ``check`` and a metric's ``info`` take the object itself or a lazy
``"module:attr"`` reference (``bench.lazy``): the module is imported when the field is first
read, so registering plugins imports no torch (``migm-bench --help``, ``report``, ``plot``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.lazy import LazyField
from bench.protocol import Accelerator, BaseModel, GeneratedBatch, MetricInfo

if TYPE_CHECKING:
    import torch
    from torch import Tensor


@dataclass(frozen=True)
class AcceleratorSpec:
    """name: what users type (``--accel name:key=val``).
    config_cls: frozen dataclass of the method's knobs (unknown keys are errors).
    factory: config -> Accelerator.
    default_sweep: option dicts the default ``migm-bench run`` includes, mild to aggressive.
    """

    name: str
    config_cls: type = LazyField()
    factory: Callable[[Any], Accelerator] = LazyField()
    description: str = ""
    default_sweep: tuple[dict[str, Any], ...] = ()
    provider: str = ""  # filled in by the plugin manager (distribution / module)


@dataclass(frozen=True)
class BaseModelSpec:
    """name: ``--model name:key=val``. factory(config, device) -> BaseModel.
    default_run: what ``migm-bench run --model name`` uses instead of ``bench.run_command.
    DEFAULT_RUN``'s images / batch_size / replicates when no sweep is given (e.g. fewer images
    for a model whose forward costs more, so its default benchmark keeps the 10-minute budget).
    extra_sweep: accelerator specs added to the accelerators' default sweeps whenever this model
    runs them: configurations only this model ships weights for (e.g. a shortcut variant trained
    for it), so the other models' default runs never ask for weights that do not exist.
    """

    name: str
    config_cls: type = LazyField()
    factory: Callable[[Any, torch.device], BaseModel] = LazyField()
    description: str = ""
    provider: str = ""
    default_run: dict[str, int] = field(default_factory=dict)
    extra_sweep: tuple[str, ...] = ()


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


class MetricValue(float):
    """A metric's value (a float, e.g. the mean over images) that also carries the per-image
    values it summarises: ``per_image`` (n,) float64 on CPU, in image order. ``compute`` may
    return one; the runner then also stores one measurement row per image under metric
    ``<name>_per_image`` (replicate = image index, seed = that image's sampling seed)."""

    per_image: Tensor

    def __new__(cls, value: float, per_image: Tensor) -> MetricValue:  # noqa: PYI034
        obj = super().__new__(cls, float(value))
        obj.per_image = per_image.detach().double().cpu().reshape(-1)
        return obj


@dataclass(frozen=True)
class MetricSpec:
    """info: name/unit/direction/reference. factory(model) -> Metric, or raises
    ``MetricUnavailable`` when the metric cannot run for that base model.

    check: optional, model-independent availability test (weights files, packages):
    returns None when the metric can be built, else the reason and what fixes it. It must be
    cheap (no model loading): ``migm-bench ls`` shows the reason, and a run that asks for the
    metric fails at start-up with it, before anything is generated.
    model_check: optional, for a metric whose resources the base model may supply itself
    (``clip_score``: the model's own CLIP, ``clip_weights()``): when ``check`` fails, the run
    builds the model and asks ``model_check(model)`` instead; None: the model supplies them,
    else the reason, and the run is refused before anything is generated.
    """

    info: MetricInfo = LazyField()
    factory: Callable[[BaseModel], Metric] = LazyField()
    default: bool = True  # part of the default metric set
    provider: str = ""
    check: Callable[[], str | None] | None = LazyField(default=None)
    model_check: Callable[[BaseModel], str | None] | None = LazyField(default=None)

    def unavailable(self) -> str | None:
        """The reason this metric cannot run here (from ``check``), or None."""
        return self.check() if self.check is not None else None


class MetricUnavailable(RuntimeError):
    """The metric cannot run on this base model (e.g. no real data for FID)."""
