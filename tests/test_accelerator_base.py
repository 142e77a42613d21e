"""The optional accelerator base class (``bench.accelerator_base``) and the default
``Block.value`` (``bench.protocol``): the ``steps=0`` rule, counts and state reset, and the
default V projection against an explicit computation."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_caches import TinyModel
from torch import Tensor

from bench.accelerator_base import AcceleratorBase
from bench.forward import full_forward, logits_of
from bench.protocol import Block, Counts, StepContext, StepOutput


@dataclass(frozen=True)
class StepsConfig:
    steps: int = 0


@dataclass(frozen=True)
class NoStepsConfig:
    width: int = 1


class Remembering(AcceleratorBase):
    """Full forwards; remembers the steps it saw since the last reset."""

    name = "remembering"

    def reset_state(self) -> None:
        self.seen: list[int] = []

    def step(self, model, ctx: StepContext) -> StepOutput:
        self.seen.append(ctx.step)
        features, _ = self.full_forward(model, ctx)
        self.counts.other_calls += 1
        return self.output(model, features)


class AtLeastTwo(Remembering):
    name = "at-least-two"
    min_steps = 2


def _ctx(model: TinyModel, step: int) -> StepContext:
    tokens = model.initial_tokens(2)
    return StepContext(step=step, num_steps=4, tokens=tokens, mask=tokens == model.mask_id,
                       cond=torch.tensor([1, 3]), streams=1, revealed_positions=None, revealed_ids=None,
                       prev_features=None)  # fmt: skip


def test_steps_zero_means_the_models_default():
    assert Remembering(StepsConfig(steps=0)).num_steps(12) == 12
    assert Remembering(StepsConfig(steps=5)).num_steps(12) == 5
    assert Remembering(NoStepsConfig()).num_steps(7) == 7  # no steps field: always the default


def test_steps_below_the_minimum_are_refused_with_the_name():
    with pytest.raises(ValueError, match="remembering: steps must be an integer >= 0, got -1"):
        Remembering(StepsConfig(steps=-1))
    with pytest.raises(ValueError, match="at-least-two: steps must be an integer >= 2, got 0"):
        AtLeastTwo(StepsConfig(steps=0))
    assert AtLeastTwo(StepsConfig(steps=2)).num_steps(12) == 2


def test_reset_zeroes_the_counts_and_drops_the_state():
    model, accel = TinyModel(), Remembering(StepsConfig())
    assert accel.counts == Counts() and accel.seen == []  # state exists from construction on
    with torch.no_grad():
        for step in range(3):
            accel.step(model, _ctx(model, step))
    assert accel.counts == Counts(full_forwards=3, other_calls=3) and accel.seen == [0, 1, 2]
    accel.reset(model, 2)
    assert accel.counts == Counts() and accel.seen == []


def test_full_forward_and_output_match_the_generic_forward():
    model, accel = TinyModel(), Remembering(StepsConfig())
    ctx = _ctx(model, 0)
    with torch.no_grad():
        out = accel.step(model, ctx)
        features, _ = full_forward(model, ctx.tokens, ctx.cond)
    assert torch.equal(out.features, features) and torch.equal(out.logits, logits_of(model, features))
    assert accel.counts.full_forwards == 1


def test_step_is_required():
    class NoStep(AcceleratorBase):
        pass

    with pytest.raises(TypeError, match="step"):
        NoStep(StepsConfig())


class QKVOnly(Block):
    """A block with a fused in-projection and no ``value`` of its own."""

    num_heads = 2

    def __init__(self, dim: int, g: torch.Generator) -> None:
        self.w = torch.randn(3 * dim, dim, generator=g)  # rows: q, k, v
        self.b = torch.randn(3 * dim, generator=g)

    def qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, q, d = h.shape
        x = F.linear(F.layer_norm(h, (d,)), self.w, self.b)  # (B, Q, 3D)
        return tuple(t.view(b, q, self.num_heads, -1).transpose(1, 2) for t in x.chunk(3, dim=-1))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def mlp(self, h: Tensor) -> Tensor:
        raise NotImplementedError


def test_default_value_is_the_value_projection():
    g = torch.Generator().manual_seed(0)
    dim, block = 8, QKVOnly(8, g)
    h = torch.randn(3, 5, dim, generator=g)  # (B, Q, D)
    w_v, b_v = block.w[2 * dim :], block.b[2 * dim :]
    v = F.layer_norm(h, (dim,)) @ w_v.T + b_v  # (B, Q, D)
    expected = v.view(3, 5, 2, dim // 2).permute(0, 2, 1, 3)  # (B, H, Q, Dh)
    torch.testing.assert_close(block.value(h), expected)
    assert isinstance(block, Block)


def test_the_base_class_imports_no_plugin():
    code = (
        "import sys, bench.accelerator_base\n"
        "plugins = [m for m in sys.modules if m.split('.')[0] in ('accelerators', 'base_models', 'metrics')]\n"
        "assert not plugins, plugins\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
