"""``vanilla``: the full base model at every step (the reference every method is timed against)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.accelerator_base import AcceleratorBase
from bench.protocol import BaseModel, StepContext, StepOutput


@dataclass(frozen=True)
class VanillaConfig:
    """steps: N; 0 means the base model's default N. Fewer steps: faster, usually worse."""

    steps: int = 0


class Vanilla(AcceleratorBase):
    """Runs every step as one full forward of both CFG streams."""

    name = "vanilla"

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        features, _ = self.full_forward(model, ctx)  # (B, L, D)
        return self.output(model, features, ctx)
