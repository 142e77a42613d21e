"""``few-step``: vanilla sampling with fewer steps, the simplest acceleration.

The smallest example of an accelerator plugin: a config dataclass, a class that
reuses ``Vanilla`` and only changes N, and one hook that registers it.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelerators.vanilla import Vanilla
from bench.protocol import Counts


@dataclass(frozen=True)
class FewStepConfig:
    """steps: N used instead of the reference N. Speed-up ~ reference N / steps;
    quality drops as more tokens are revealed per step (the multi-modality problem)."""

    steps: int = 8


class FewStep(Vanilla):
    def __init__(self, config: FewStepConfig) -> None:
        if config.steps < 1:
            raise ValueError(f"few-step needs steps >= 1, got {config.steps}")
        self.config = config
        self.counts = Counts()

    def num_steps(self, default_steps: int) -> int:
        return self.config.steps

