"""``taylorseer``: TaylorSeer (Taylor-series feature forecasting) on the block protocol.

Reference: TaylorSeer (Shenyi-Z/TaylorSeer, "From Reusing to Forecasting: Accelerating
Diffusion Models with TaylorSeers", ICCV 2025), ``TaylorSeer-DiT``:
``taylor_utils/__init__.py`` (``derivative_approximation``, ``taylor_formula``),
``cache_functions/cal_type.py`` (full / Taylor step choice), ``cache_functions/cache_init.py``
(``first_enhance = 2``) and ``sample.py`` (``--interval 4 --max-order 4``), ``models.py``
(``DiTBlock.forward``: what is cached and how a Taylor step rebuilds the hidden state).

What the reference does: on full steps every block's attention output and MLP output
(before the residual add) is stored with its ladder of backward finite differences,
``F_0 = x(t)``, ``F_{i+1} = (F_i(t) - F_i(t_prev)) / (t - t_prev)`` up to ``max_order``;
a Taylor step at distance ``k`` from the last full step predicts every output as
``sum_i F_i k^i / i!`` and rebuilds the hidden state from the fresh embedding:
``h = embed; for each block: h += attn_pred; h += mlp_pred``.

Every operation on the cached outputs (differences, the Taylor sum, the residual sum) is
linear and all modules share one schedule, so the forecast of the final hidden state equals
``embed + forecast(sum of all module outputs)``. We forecast that sum, ``h_last - embed``
(one (B, L, D) ladder instead of 2 x depth of them: same result up to float rounding, far
less memory and time). ``TaylorForecaster`` is the pure tensor math.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.accelerator_base import AcceleratorBase, require_int
from bench.forward import block_forward
from bench.protocol import BaseModel, StepContext, StepOutput


@dataclass(frozen=True)
class TaylorSeerConfig:
    """Knobs of TaylorSeer (defaults: TaylorSeer-DiT ``sample.py`` and ``cache_init.py``).

    interval: after the first steps, one full step every ``interval`` steps (4); the others
        are Taylor steps (embedding + final layers + head only). Higher: faster, larger
        extrapolation error. 1 disables caching (= vanilla).
    max_order: highest finite-difference order of the forecast (4). 0 reuses the last full
        step's outputs (plain caching); higher orders follow curved trajectories but amplify
        noise when full steps are few.
    first_enhance: the first ``first_enhance`` steps are full (2). Higher: safer start, slower.
    steps: N; 0 means the base model's default N.
    """

    interval: int = 4
    max_order: int = 4
    first_enhance: int = 2
    steps: int = 0


def is_full_step(step: int, interval: int, first_enhance: int) -> bool:
    """``cal_type``: full for the first ``first_enhance`` steps, then every ``interval``-th."""
    return step < first_enhance or (step - (first_enhance - 1)) % interval == 0


class TaylorForecaster:
    """Finite-difference Taylor forecaster of a tensor trajectory (pure tensor math).

    ``update(value, step)`` after a full computation at ``step``; ``predict(step)`` returns
    ``sum_i F_i (step - last)^i / i!``. ``derivatives=False`` on an update keeps only the
    value (the reference's warm-up condition in ``derivative_approximation``).
    """

    def __init__(self, max_order: int) -> None:
        if max_order < 0:
            raise ValueError(f"max_order must be >= 0, got {max_order}")
        self.max_order = max_order
        self.factors: list[Tensor] = []  # F_0 .. F_m
        self.last_step: int | None = None

    def reset(self) -> None:
        self.factors, self.last_step = [], None

    def update(self, value: Tensor, step: int, derivatives: bool = True) -> None:
        new = [value]
        if derivatives and self.last_step is not None:
            distance = step - self.last_step
            if distance <= 0:
                raise ValueError(f"forecaster steps must increase: {self.last_step} then {step}")
            for i in range(min(self.max_order, len(self.factors))):
                new.append((new[i] - self.factors[i]) / distance)
        self.factors, self.last_step = new, step

    def predict(self, step: int) -> Tensor:
        if self.last_step is None:
            raise RuntimeError("TaylorForecaster.predict before any update")
        x = step - self.last_step
        out = self.factors[0].clone()
        for i, factor in enumerate(self.factors[1:], start=1):
            out.add_(factor, alpha=x**i / math.factorial(i))
        return out


class TaylorSeer(AcceleratorBase):
    """Full steps feed the forecaster; Taylor steps predict the blocks' total residual update."""

    name = "taylorseer"

    def __init__(self, config: TaylorSeerConfig) -> None:
        require_int(self.name, "interval", config.interval, 1)
        require_int(self.name, "max_order", config.max_order, 0)
        require_int(self.name, "first_enhance", config.first_enhance, 1)
        self.forecaster = TaylorForecaster(config.max_order)
        super().__init__(config)

    def reset_state(self) -> None:
        self.forecaster.reset()

    @torch.no_grad()
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        cfg = self.config
        embedded = model.embed(ctx.tokens, ctx.cond)  # (B, L, D), fresh every step
        if is_full_step(ctx.step, cfg.interval, cfg.first_enhance) or self.forecaster.last_step is None:
            h, layout = embedded, self.layout(model, ctx)
            for block in model.blocks:
                h, _ = block_forward(block, h, layout=layout)
            # the reference extends the difference ladder only from step first_enhance - 1 on
            self.forecaster.update(h - embedded, ctx.step, derivatives=ctx.step >= cfg.first_enhance - 1)
            self.counts.full_forwards += 1
        else:
            h = embedded + self.forecaster.predict(ctx.step)  # (B, L, D)
            self.counts.other_calls += 1  # embedding + final layers + head only
        return self.output(model, model.final_features(h), ctx)
