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
* scope "sequence", the reference's own setting (the default on base models that give
  image-code logits at every sequence position, ``sequence_logits``: Lumina-DiMOO): the
  confidence and the quantile cover the whole sequence of each branch, prompt and special
  tokens included, and a logit cache over the whole sequence keeps them (the reference's
  ``logit_cache``). Each conditional and unconditional row is its own branch with its own
  caches, as the reference's ``cat`` caches. Padding (batches of prompts of different
  lengths) is neither counted nor selected: a row's count is that of its real length; a row
  selecting fewer than the longest fills the rectangle by repeating its first pick
  (recomputing a position twice in one pass writes the same values twice: exact);
* scope "image" (the default elsewhere: MaskGIT's head gives logits of image positions only):
  the quantile covers the P image positions; the condition positions, which have no
  image-codebook logits there, are always recomputed (``recompute_condition``, default, cost
  (L - P) / L per cached step) or never.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from accelerators._cache_common import PartialStepCache
from bench.accelerator_base import require_fraction, require_int
from bench.forward import image_rows, partial_forward, scatter_positions
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
    recompute_condition: scope "image" only: recompute the condition positions on every
        cached step (True), or keep their cached K/V (False, slightly cheaper for long prompts).
    scope: which positions the quantile ranks: "sequence" (the whole branch sequence, prompt
        included: the reference's setting; needs the base model's ``sequence_logits``),
        "image" (the image positions, the condition per ``recompute_condition``) or "auto"
        (sequence where the base model offers it, else image). Same cost per cached step.
    steps: N; 0 means the base model's default N.
    """

    cache_ratio: float = 0.9
    warmup_ratio: float = 0.3
    refresh_interval: int = 5
    recompute_condition: bool = True
    scope: str = "auto"
    steps: int = 0


SCOPES = ("auto", "image", "sequence")


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


def least_confident_in_sequence(confidence: Tensor, real: Tensor | None, cache_ratio: float) -> Tensor:
    """Scope "sequence": (B, L) confidences (max image-code logit at every position) -> (B, Q)
    sequence positions to recompute, per row the ``recompute_count`` of its real positions
    (``real`` (B, L) bool, None = all) with the lowest confidence; padding is never picked. Rows
    with fewer picks than the longest repeat their first pick (Q = the largest count)."""
    if real is None:
        real = torch.ones_like(confidence, dtype=torch.bool)
    counts = torch.tensor([recompute_count(int(n), cache_ratio) for n in real.sum(dim=1).tolist()],
                          device=confidence.device)  # fmt: skip
    ranked = torch.topk(confidence.masked_fill(~real, torch.inf), int(counts.max()), dim=-1, largest=False)
    order = ranked.indices  # (B, Q), lowest confidence first
    kept = torch.arange(order.shape[1], device=order.device)[None] < counts[:, None]  # (B, Q)
    return torch.where(kept, order, order[:, :1])


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
        if config.scope not in SCOPES:
            raise ValueError(f"{self.name}: scope must be one of {', '.join(SCOPES)}, got {config.scope!r}")
        super().__init__(config)

    def reset_state(self) -> None:
        super().reset_state()
        self._seq_logits: Tensor | None = None  # scope "sequence": (B, L, V) logit cache of every position

    def scope(self, model: BaseModel) -> str:
        """The scope this model gets ("auto" resolved)."""
        has_sequence_logits = getattr(model, "sequence_logits", None) is not None
        if self.config.scope == "auto":
            return "sequence" if has_sequence_logits else "image"
        if self.config.scope == "sequence" and not has_sequence_logits:
            raise ValueError(
                f"{self.name}: scope=sequence needs image-code logits at every sequence position, which "
                f"base model {model.name!r} does not give (no sequence_logits); use scope=image"
            )
        return self.config.scope

    @torch.no_grad()
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        cfg = self.config
        refresh = is_refresh_step(ctx.step, ctx.num_steps, cfg.warmup_ratio, cfg.refresh_interval)
        sequence = self.scope(model) == "sequence"
        if refresh or self._logits is None:
            return self._sequence_full_step(model, ctx) if sequence else self.cached_full_step(model, ctx)
        if sequence:
            return self._sequence_step(model, ctx)
        count = recompute_count(model.num_image_tokens, cfg.cache_ratio)
        image_pos = least_confident_positions(self._logits, count)  # (B, count)
        return self.partial_step(model, ctx, image_pos, cfg.recompute_condition)

    def _sequence_full_step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        """Scope "sequence": a counted full forward that refills the K/V, the feature cache and
        the logit cache of every position; the step's logits are its image rows (the head runs
        once over the sequence, as in the partial steps)."""
        features, self._kv = self.full_forward(model, ctx)  # (B, L, D)
        self._seq_logits = model.sequence_logits(features)  # (B, L, V)
        self._features, self._logits = features, image_rows(self.layout(model, ctx), self._seq_logits)
        return StepOutput(logits=self._logits, features=features)

    def _sequence_step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        """Scope "sequence": recompute the least confident positions of the whole sequence; their
        logits overwrite the sequence logit cache, whose image rows are the step's logits."""
        assert self._kv is not None and self._seq_logits is not None and self._features is not None
        layout = self.layout(model, ctx)
        confidence = self._seq_logits.amax(dim=-1)  # (B, L): max image-code logit per position
        query_pos = least_confident_in_sequence(
            confidence, layout.key_mask, self.config.cache_ratio
        )  # (B, Q)
        fresh = partial_forward(model, ctx.tokens, ctx.cond, query_pos, self._kv, layout)  # (B, Q, D)
        fresh_logits = model.sequence_logits(fresh).to(self._seq_logits.dtype)  # (B, Q, V)
        # out of place: the tensors handed to the loop are never modified afterwards
        self._seq_logits = scatter_positions(self._seq_logits, query_pos, fresh_logits)
        self._features = scatter_positions(self._features, query_pos, fresh)
        self._logits = image_rows(layout, self._seq_logits)  # (B, P, V)
        self.counts.partial_forwards += 1
        self.counts.partial_positions += query_pos.shape[1] / layout.seq_len
        return StepOutput(logits=self._logits, features=self._features)
