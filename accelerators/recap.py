"""``recap``: ReCAP (cached local steps between full steps) on the block protocol.

Reference: ReCAP (liebenxj/ReCAP, "Plug-and-Play Context Feature Reuse for Efficient Masked
Generation", arXiv 2505.19089, 2025), ``examples/MaskGIT+ReCAP/cache_decoding.py`` (the grouped
schedule and the local steps) and ``examples/MaskGIT+ReCAP/models/uvit.py`` (``past_kvs``).

What the reference does:

* the first ``pre_full_iters`` steps are ordinary full steps;
* then steps come in groups: one full step + ``num_cache_iters`` local steps (the last group
  may be shorter). The full step runs the whole model, keeps every layer's K/V, and ranks the
  masked positions by confidence (log-probability of a sampled token + Gumbel noise); the top
  ``k_0 + ... + k_m`` (the group's reveal counts from the schedule) are the group, revealed
  best first: ``k_0`` now, ``k_j`` at local step j;
* a local step feeds only the group positions (revealed group tokens included) as queries;
  they attend to the full step's K/V of every other position plus their own fresh K/V, and
  their logits are used to sample the tokens that step reveals.

Here the full step asks the generic loop to reserve the group (``StepOutput.reserve_steps``):
the loop ranks by its own confidence (the same sampled-token log-probability + Gumbel noise
it uses every step), reveals the first ``k_0`` and reveals the rest in rank order at the
next steps. A local step is ``bench.forward.partial_forward`` on the group positions (fresh
K/V written into the cache: the same attention set as the reference's concatenation); every
other position returns the full step's logits, which the loop does not reveal from. The
reference also recomputes its context token in local steps; ``recompute_condition`` does
that for our condition positions (default; one position for class labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from accelerators._cache_common import PartialStepCache
from bench.accelerator_base import require_int
from bench.protocol import BaseModel, StepContext, StepOutput


@dataclass(frozen=True)
class ReCAPConfig:
    """Knobs of ReCAP. The reference's argparse defaults (0, 0) turn it off; the defaults here
    are its published MaskGIT setting for 16 steps (``run_maskgit_recap.sh``:
    ``--gen_step 16 --pre_full_iters 8 --num_cache_iters 1``).

    pre_full_iters: ordinary full steps before grouping starts (8). Lower: more local steps
        early, where context changes fastest (faster, riskier).
    num_cache_iters: local steps after each full step (1). Higher: fewer full steps (faster),
        the group's positions fixed for longer. 0 disables caching (= vanilla).
    recompute_condition: also recompute the condition positions in local steps (True, as the
        reference's context token) or keep their cached K/V (False).
    steps: N; 0 means the base model's default N.
    """

    pre_full_iters: int = 8
    num_cache_iters: int = 1
    recompute_condition: bool = True
    steps: int = 0


def group_length(step: int, num_steps: int, pre_full_iters: int, num_cache_iters: int) -> int:
    """Local steps that follow a full step at ``step`` (0 before grouping starts or when off);
    the last group is cut at the end of sampling, as the reference's."""
    if num_cache_iters == 0 or step < pre_full_iters:
        return 0
    return min(num_cache_iters, num_steps - 1 - step)


class ReCAP(PartialStepCache):
    """Full steps fix the group and cache K/V; local steps run only the group's positions."""

    name = "recap"

    def __init__(self, config: ReCAPConfig) -> None:
        require_int(self.name, "pre_full_iters", config.pre_full_iters, 0)
        require_int(self.name, "num_cache_iters", config.num_cache_iters, 0)
        super().__init__(config)

    def reset_state(self) -> None:
        super().reset_state()
        self._local_left = 0  # local steps still to run in the current group
        self._group: Tensor | None = None  # (B, G) image positions of the current group

    @torch.no_grad()
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        if self._local_left > 0:
            return self._local_step(model, ctx)
        out = self.cached_full_step(model, ctx)
        cfg = self.config
        self._local_left = group_length(ctx.step, ctx.num_steps, cfg.pre_full_iters, cfg.num_cache_iters)
        self._group = None
        return StepOutput(logits=out.logits, features=out.features, reserve_steps=self._local_left)

    def _local_step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        if self._group is None:  # first local step: group = revealed by the full step + reserved
            if ctx.reserved_positions is None or ctx.revealed_positions is None:
                raise RuntimeError(
                    "recap: the sampling loop did not reserve the group's positions "
                    "(it must honour StepOutput.reserve_steps)"
                )
            self._group = torch.cat([ctx.revealed_positions, ctx.reserved_positions], dim=1)
        out = self.partial_step(model, ctx, self._group, self.config.recompute_condition)
        self._local_left -= 1
        return out
