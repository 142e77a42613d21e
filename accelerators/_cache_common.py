"""Small pieces the training-free cache accelerators share (ML-Cache, ReCAP): the condition
positions appended to a partial step's queries, and the full / partial steps."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.accelerator_base import AcceleratorBase
from bench.forward import condition_index, logits_of, partial_forward, scatter_positions, to_sequence
from bench.protocol import BaseModel, LayerKV, SequenceLayout, StepContext, StepOutput


def with_condition(positions: Tensor, layout: SequenceLayout) -> Tensor:
    """(B, Q) sequence positions -> (B, Q + C): the layout's condition positions appended."""
    return torch.cat([positions, condition_index(layout, positions.shape[0], positions.device)], dim=1)


class PartialStepCache(AcceleratorBase):
    """Full steps cache every layer's K/V, the logits and the features; partial steps recompute
    chosen image positions (and optionally the condition positions) against that K/V and
    reuse the cached logits and features everywhere else (ML-Cache, ReCAP)."""

    def reset_state(self) -> None:
        self._kv: list[LayerKV] | None = None  # every layer's (B, H, L, Dh) K/V
        self._logits: Tensor | None = None  # (B, P, V) logit cache
        self._features: Tensor | None = None  # (B, L, D) feature cache

    def cached_full_step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        """A counted full forward that refills every cache."""
        features, self._kv = self.full_forward(model, ctx)  # (B, L, D)
        self._features, self._logits = features, logits_of(model, features, self.layout(model, ctx))
        return StepOutput(logits=self._logits, features=features)

    def partial_step(
        self, model: BaseModel, ctx: StepContext, image_pos: Tensor, recompute_condition: bool
    ) -> StepOutput:
        """The blocks on ``image_pos`` (B, G) (+ the condition positions when
        ``recompute_condition``) attending to the cached K/V of all positions (their fresh K/V
        written in first); their logits and features overwrite the caches."""
        assert self._kv is not None and self._logits is not None and self._features is not None
        layout = self.layout(model, ctx)
        seq_pos = to_sequence(layout, image_pos)  # (B, G) where those image tokens sit
        query_pos = with_condition(seq_pos, layout) if recompute_condition else seq_pos  # (B, Q)
        fresh = partial_forward(model, ctx.tokens, ctx.cond, query_pos, self._kv, layout)  # (B, Q, D)
        fresh_logits = model.head(fresh[:, : image_pos.shape[1]], image_pos)  # (B, G, V)
        # out of place: the tensors handed to the loop are never modified afterwards
        self._logits = scatter_positions(self._logits, image_pos, fresh_logits.to(self._logits.dtype))
        self._features = scatter_positions(self._features, query_pos, fresh)
        self.counts.partial_forwards += 1
        self.counts.partial_positions += query_pos.shape[1] / layout.seq_len
        return StepOutput(logits=self._logits, features=self._features)
