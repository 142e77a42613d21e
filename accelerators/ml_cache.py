"""``ml-cache``: Lumina-DiMOO's ML-Cache (max-logit cache) on the block protocol.

Reference: Lumina-DiMOO (Alpha-VLLM/Lumina-DiMOO, "Lumina-DiMOO: An Omni Diffusion Large
Language Model for Multi-Modal Generation and Understanding", 2025):
``generators/image_generation_generator.py`` (``generate_image``: refresh schedule and the
to-compute mask) and ``model/modeling_llada.py`` (``LLaDAModel.forward`` / ``LLaDALlamaBlock``:
per-layer K/V cache, logit cache, queries restricted to the to-compute positions).

What the reference does, step by step:

* refresh steps (``step <= int(N * warmup_ratio)`` or ``(step - that) % refresh_interval == 0``)
  run the full model and cache every layer's K/V and the logits;
* after every step whose successor is not a refresh step, the confidence of each position is
  the max logit over the image codebook of the logits that step returned (the cache merged
  with the fresh rows), and the positions at or below the ``1 - cache_ratio`` quantile of
  it (per row, ``torch.quantile``, linear interpolation, *all* positions: masked and already
  revealed alike) are marked to compute;
* cached steps run the blocks only on the marked positions, which attend to the cached K/V
  of all positions after their fresh K/V are written in; their logits overwrite the logit
  cache, every other position reuses its cached logits.

Differences, all forced by our protocol or the batched setting:

* a fixed count per row keeps tensors rectangular: ``recompute_count`` lowest-confidence
  image positions, the number of values the reference's quantile threshold selects when no
  two confidences tie (ties are broken by ``topk``; the reference would take every tied
  value). The count follows ``torch.quantile``'s own float32 arithmetic, not a closed form
  in real numbers (P = 256, cache_ratio 0.8: 52, where ``floor(0.2 * 255) + 1`` in float64
  gives 51);
* the reference ranks condition (prompt) positions with the image ones by their
  image-codebook max logit, which our heads do not produce; ``recompute_condition`` treats
  them as always selected (default, cost (L - P) / L per cached step) or never.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from accelerators._cache_common import PartialStepCache
from bench.accelerator_base import require_fraction, require_int
from bench.protocol import BaseModel, StepContext, StepOutput


@dataclass(frozen=True)
class MLCacheConfig:
    """Knobs of ML-Cache (defaults: ``generate_image`` in Lumina-DiMOO).

    cache_ratio: fraction of image positions that reuse cached logits/K/V on a cached step
        (0.9). Higher: cheaper cached steps, more stale positions.
    warmup_ratio: steps ``0 .. int(N * warmup_ratio)`` are all full (0.3). Lower: more cached
        steps (faster) during the early steps, where the image changes most.
    refresh_interval: after the warm-up, every refresh_interval-th step is full (5). Higher:
        fewer full steps (faster), staler caches. 1 disables caching (= vanilla).
    recompute_condition: recompute the condition positions on every cached step (True),
        or keep their cached K/V (False, slightly cheaper for long prompts).
    steps: N; 0 means the base model's default N.
    """

    cache_ratio: float = 0.9
    warmup_ratio: float = 0.3
    refresh_interval: int = 5
    recompute_condition: bool = True
    steps: int = 0


def is_refresh_step(step: int, num_steps: int, warmup_ratio: float, refresh_interval: int) -> bool:
    """Lumina-DiMOO's ``refresh_steps``: full during the warm-up and every refresh_interval after."""
    warmup_step = int(num_steps * warmup_ratio)
    return step <= warmup_step or (step - warmup_step) % refresh_interval == 0


def recompute_count(num_positions: int, cache_ratio: float) -> int:
    """How many of ``num_positions`` distinct confidences lie at or below the reference's
    threshold ``torch.quantile(conf.float(), 1 - cache_ratio)`` (Lumina-DiMOO
    ``generators/image_generation_generator.py``, ``generate_image``).

    ``torch.quantile`` (linear interpolation) rounds ``q = 1 - cache_ratio`` to float32 (the
    input's dtype), takes the rank ``q * (P - 1)``, and interpolates between the sorted values
    at ``floor(rank)`` and ``floor(rank) + 1`` with a float32 weight ``rank - floor(rank)``.
    Measured on torch 2.14 (the tests probe ``torch.quantile`` itself), the rank keeps the
    product's full precision, while the weight is rounded to float32; a weight that rounds to
    1 puts the threshold on the next value. So, with no ties, ``floor(rank) + 1`` values are
    selected, one more when the weight rounds to 1. The float32 ``q`` matters: for P = 256,
    cache_ratio 0.8 the rank is float32(0.2) * 255 = 51.00000076 and 52 positions are
    recomputed, where the real-number formula ``floor(0.2 * 255) + 1`` in float64 gives 51.
    """
    if num_positions < 1:
        raise ValueError(f"ml-cache: need at least one position, got {num_positions}")
    q = torch.tensor(1.0 - cache_ratio, dtype=torch.float32)  # the reference's compute_ratio in torch
    rank = q.double() * (num_positions - 1)
    below = int(torch.floor(rank).item())
    weight_is_one = bool((rank - below).float() == 1.0)
    return min(num_positions, below + 1 + int(weight_is_one))


def least_confident_positions(logits: Tensor, count: int) -> Tensor:
    """(B, P, V) cached logits -> (B, count) image positions with the lowest max logit."""
    confidence = logits.amax(dim=-1)  # (B, P): max logit over the image codebook
    return torch.topk(confidence, count, dim=-1, largest=False).indices


class MLCache(PartialStepCache):
    """Full steps cache K/V, logits and features; cached steps recompute the least confident
    positions only (per row, so each CFG stream keeps its own choice)."""

    name = "ml-cache"

    def __init__(self, config: MLCacheConfig) -> None:
        require_fraction(self.name, "cache_ratio", config.cache_ratio, upper_open=True)
        require_fraction(self.name, "warmup_ratio", config.warmup_ratio)
        require_int(self.name, "refresh_interval", config.refresh_interval, 1)
        super().__init__(config)

    @torch.no_grad()
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        cfg = self.config
        refresh = is_refresh_step(ctx.step, ctx.num_steps, cfg.warmup_ratio, cfg.refresh_interval)
        if refresh or self._logits is None:
            return self.cached_full_step(model, ctx)
        count = recompute_count(model.num_image_tokens, cfg.cache_ratio)
        image_pos = least_confident_positions(self._logits, count)  # (B, count)
        return self.partial_step(model, ctx, image_pos, cfg.recompute_condition)
