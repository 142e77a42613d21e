"""An optional base class for accelerators: the parts every built-in one shares.

In the spirit of diffusers' ``ModelHook`` (``src/diffusers/hooks/hooks.py``): a subclass
states what its method does at a step (``step``) and what it keeps between steps
(``reset_state``, like ``ModelHook.reset_state``); the base class supplies the rest of the
``bench.protocol.Accelerator`` protocol:

* the ``steps`` option: a config field ``steps: int`` is N, and **0 means the base model's
  default N** (``num_steps``); a config without the field always uses the default.
  ``steps`` below ``min_steps`` is refused when the accelerator is built;
* ``counts`` (``bench.protocol.Counts``), zeroed with the per-batch state by ``reset``;
* ``full_forward``: one counted full forward, and ``output``: the step's logits from its
  features.

Plugins import it from here; it imports no plugin (the layering rule of ``bench/``)::

    class MyAccel(AcceleratorBase):
        name = "my-accel"  # names the accelerator in config errors

        def reset_state(self) -> None:
            self.cache = None

        def step(self, model, ctx):
            features, _ = self.full_forward(model, ctx)  # (B, L, D)
            return self.output(model, features, ctx)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from bench import forward
from bench.protocol import BaseModel, Counts, LayerKV, SequenceLayout, StepContext, StepOutput


def require_int(owner: str, name: str, value: int, minimum: int) -> None:
    """A clear error for an integer knob below its minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def require_fraction(owner: str, name: str, value: float, *, upper_open: bool = False) -> None:
    """A clear error for a ratio knob outside [0, 1] (or [0, 1) with ``upper_open``)."""
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{owner}: {name} must lie in {interval}, got {value!r}")


class AcceleratorBase(ABC):
    """Common parts of an accelerator; subclasses implement ``step`` (and ``reset_state`` when
    they keep anything between steps). Subclasses check their own knobs before calling
    ``super().__init__(config)``."""

    name: ClassVar[str] = "accelerator"  # how config errors name the accelerator
    min_steps: ClassVar[int] = 0  # the smallest ``steps`` accepted (0: the model's default N)

    def __init__(self, config: Any) -> None:
        require_int(self.name, "steps", self.steps_option(config), self.min_steps)
        self.config = config
        self.counts = Counts()
        self.reset_state()

    @staticmethod
    def steps_option(config: Any) -> int:
        """The config's ``steps`` (0, the model's default, when it has no such field)."""
        return getattr(config, "steps", 0)

    def num_steps(self, default_steps: int) -> int:
        """N: the config's ``steps``, or the base model's default N when it is 0."""
        return self.steps_option(self.config) or default_steps

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        """Before every batch: zero the counts and drop the state of the previous batch."""
        self.counts = Counts()
        self.reset_state()

    def reset_state(self) -> None:
        """Drop what the accelerator keeps between steps (its caches). Called when it is built
        and by every ``reset``; nothing to drop here."""

    @abstractmethod
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        """This step's logits (B, P, V) and last-layer features (B, L, D)."""

    def full_forward(self, model: BaseModel, ctx: StepContext) -> tuple[Tensor, list[LayerKV]]:
        """All blocks on all positions of both CFG streams, counted as one full forward:
        features (B, L, D) and every layer's K/V."""
        features, kv = forward.full_forward(model, ctx.tokens, ctx.cond, self.layout(model, ctx))
        self.counts.full_forwards += 1
        return features, kv

    @staticmethod
    def layout(model: BaseModel, ctx: StepContext) -> SequenceLayout:
        """The step's ``SequenceLayout`` (where the image tokens sit in the rows ``ctx.cond``)."""
        return forward.layout_of(model, ctx.cond)

    @staticmethod
    def output(model: BaseModel, features: Tensor, ctx: StepContext | None = None) -> StepOutput:
        """The step's output from its last-layer features (B, L, D): the head's logits of the
        image positions (those of ``ctx``'s layout; without ctx the default layout) with the
        features."""
        layout = None if ctx is None else forward.layout_of(model, ctx.cond)
        return StepOutput(logits=forward.logits_of(model, features, layout), features=features)
