"""``vanilla``: the full base model at every step (the reference every method is timed against)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.forward import full_forward, logits_of
from bench.protocol import BaseModel, Counts, StepContext, StepOutput


@dataclass(frozen=True)
class VanillaConfig:
    """steps: N; 0 means the base model's default N. Fewer steps: faster, usually worse."""

    steps: int = 0


class Vanilla:
    """Runs every step as one full forward of both CFG streams."""

    def __init__(self, config: VanillaConfig) -> None:
        if config.steps < 0:
            raise ValueError(f"steps must be >= 0, got {config.steps}")
        self.config = config
        self.counts = Counts()

    def num_steps(self, default_steps: int) -> int:
        return self.config.steps or default_steps

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        self.counts = Counts()

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        features, _ = full_forward(model, ctx.tokens, ctx.cond)  # (B, L, D)
        self.counts.full_forwards += 1
        return StepOutput(logits=logits_of(model, features), features=features)

