"""Test-only plugin: accelerators that fail, stall or interrupt, tiny metrics, a command.

Registered by the ``manager`` fixture (tests/conftest.py) and, in subprocess tests, with
``migm-bench -p bench_test_plugin`` (tests/ on PYTHONPATH).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from accelerators.vanilla import Vanilla
from bench.hookspecs import hookimpl
from bench.protocol import MetricInfo, StepContext, StepOutput
from bench.specs import AcceleratorSpec, MetricSpec, MetricUnavailable

# Flipped by tests: while True, the ``interrupt`` accelerator raises KeyboardInterrupt (which
# the runner must not swallow: it stands in for a kill in the middle of a configuration).
INTERRUPT = {"armed": False}


@dataclass(frozen=True)
class BoomConfig:
    """at_step: the step at which sampling raises."""

    at_step: int = 1


class Boom(Vanilla):
    """N is the model's default: the config has no ``steps`` (``AcceleratorBase.num_steps``)."""

    def step(self, model, ctx: StepContext) -> StepOutput:
        if ctx.step == self.config.at_step:
            raise RuntimeError(f"boom at step {ctx.step}")
        return super().step(model, ctx)


@dataclass(frozen=True)
class SleepyConfig:
    """seconds: sleep before every step (slows a configuration down for kill tests)."""

    seconds: float = 0.05


class Sleepy(Vanilla):
    """N is the model's default: the config has no ``steps`` (``AcceleratorBase.num_steps``)."""

    def step(self, model, ctx: StepContext) -> StepOutput:
        time.sleep(self.config.seconds)
        return super().step(model, ctx)


@dataclass(frozen=True)
class InterruptConfig:
    steps: int = 0


class Interrupt(Vanilla):
    def step(self, model, ctx: StepContext) -> StepOutput:
        if INTERRUPT["armed"]:
            raise KeyboardInterrupt("simulated kill")
        return super().step(model, ctx)


class SameTokens:
    """Fraction of image tokens equal to vanilla's at the same seed (1.0 for vanilla)."""

    info = MetricInfo("same_tokens", "fraction", True, "vanilla")

    def compute(self, generated, ctx) -> float:
        return float((generated.tokens == ctx.vanilla.tokens).float().mean())


class MeanPixel:
    info = MetricInfo("mean_pixel", "intensity", True, "data")

    def compute(self, generated, ctx) -> float:
        return float(generated.images.mean())


def _unavailable(model):
    raise MetricUnavailable("needs real data the test model does not have")


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(name="boom", config_cls=BoomConfig, factory=Boom, description="raises while sampling")
    )
    register(
        AcceleratorSpec(name="sleepy", config_cls=SleepyConfig, factory=Sleepy, description="sleeps per step")
    )
    register(
        AcceleratorSpec(
            name="interrupt",
            config_cls=InterruptConfig,
            factory=Interrupt,
            description="KeyboardInterrupt while armed",
        )
    )


@hookimpl
def register_metrics(register):
    register(MetricSpec(info=SameTokens.info, factory=lambda model: SameTokens()))
    register(MetricSpec(info=MeanPixel.info, factory=lambda model: MeanPixel(), default=False))
    register(
        MetricSpec(info=MetricInfo("needs_data", "", False, "data"), factory=_unavailable, default=False)
    )


@hookimpl
def register_commands(subparsers):
    p = subparsers.add_parser("hello", help="test command")
    p.add_argument("--who", default="world")
    p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)
