"""``dllm-cache``: dLLM-Cache (adaptive feature caching with V-verify) on the block protocol.

Reference: dLLM-Cache (maomaocun/dLLM-cache, "dLLM-Cache: Accelerating Diffusion Large
Language Models with Adaptive Caching", 2025): ``dllm_cache/hooks/cache_hook_LLaDA.py``
(``cache_hook_feature``, ``refresh_index``), ``dllm_cache/cache`` (``dLLMCache``: step
counter, ``refresh_gen`` / ``refresh_prompt``) and ``demo_LLaDA.py`` (the settings it ships:
``prompt_interval_steps=100, gen_interval_steps=7, transfer_ratio=0.25``; the config class's
own defaults 1 / 1 / 0.0 turn caching off).

Per layer the reference caches K, V, the attention output and the MLP output (both before
the residual add), separately for the prompt (here: the condition positions [P, L)) and the
generated tokens (here: the image positions [0, P)), each refreshed every
``prompt_interval`` / ``gen_interval`` steps (step index % interval == 0). On a step that
does not refresh the image part, "V-verify": the value projection of all image tokens is
recomputed from the layer input, the ``int(P * transfer_ratio)`` tokens whose new V is least
cosine-similar to the cached V (over the whole width D, per row) are recomputed fully
(q, k, attention against the cached K/V, MLP), every image token's cached V is replaced by
its new V, and all others reuse their cached attention / MLP outputs. The layer input is
always the running hidden state: fresh embedding + the (cached or fresh) outputs of the
layers below, so a changed token still moves its V.

Layer 0 (``refresh_first_layer``, on by default): the reference's LLaDA hook recomputes the
first layer in full at every step (``refresh_gen = ... or self.layer_id == 0``, likewise
``refresh_prompt``; ``cache_hook_LLaDA.py`` since commit 1ef9d03, 2025-07-06, "fixed bug by.
enforcing layer_id==0 refresh all", unchanged at HEAD 17235bf). So on a cheap step only
layers 1.. use the caches and V-verify. ``refresh_first_layer=False`` is the older rule, which
the reference's MMaDA hook (``cache_hook_MMaDA.py``) still follows: every layer, layer 0
included, follows the refresh schedule.

V-verify runs whenever ``0 < transfer_ratio`` (the reference's ``transfer`` flag), even when
``int(P * transfer_ratio)`` is 0: then no token is recomputed, but every image token's cached
V is still replaced by its new V (``kv_cache_gen["v"] = v_gen`` after ``refresh_index``
returns an empty selection).

On the block protocol: ``block.value`` is the V pass, ``block.qkv`` runs on the selected rows
(V of those rows is computed twice: a ``transfer_ratio`` fraction of one projection),
``block.attend`` attends to the cache after the fresh K/V are written in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.accelerator_base import AcceleratorBase, require_fraction, require_int
from bench.forward import block_attend, block_qkv, condition_index, gather_positions, image_index, write_kv
from bench.protocol import BaseModel, Block, LayerKV, SequenceLayout, StepContext, StepOutput


@dataclass(frozen=True)
class DLLMCacheConfig:
    """Knobs of dLLM-Cache (defaults: the reference's ``demo_LLaDA.py``).

    prompt_interval: refresh the condition positions every this many steps (100, i.e. only
        at step 0 for image models). Lower: fresher condition features, slower.
    gen_interval: refresh all image positions every this many steps (7). Lower: more full
        steps (slower), fresher features. ``gen_interval = prompt_interval = 1`` = vanilla.
    transfer_ratio: fraction of image positions V-verify recomputes on the other steps
        (0.25). Higher: slower, closer to vanilla; 0: pure reuse between refreshes.
    refresh_first_layer: recompute layer 0 in full at every step (True: the reference's LLaDA
        hook since commit 1ef9d03). False: the older rule of its MMaDA hook, layer 0 cached
        like every other layer (cheaper by about one layer per cheap step).
    steps: N; 0 means the base model's default N. Both intervals count steps, whatever N is.
    """

    prompt_interval: int = 100
    gen_interval: int = 7
    transfer_ratio: float = 0.25
    refresh_first_layer: bool = True
    steps: int = 0


def value_change_scores(v_new: Tensor, v_cached: Tensor) -> Tensor:
    """Cosine similarity of each token's value vector, over all heads: (B, H, Q, Dh) x2 -> (B, Q).

    Equals ``F.cosine_similarity`` on the heads concatenated to width D (``refresh_index``),
    without materialising the transposes."""
    dot = (v_new * v_cached).sum(dim=(1, 3))
    norms = v_new.square().sum(dim=(1, 3)).sqrt() * v_cached.square().sum(dim=(1, 3)).sqrt()
    return dot / norms.clamp_min(1e-8)


def select_changed(v_new: Tensor, v_cached: Tensor, count: int) -> Tensor:
    """V-verify: the ``count`` tokens whose value moved most (lowest cosine): (B, count)."""
    return torch.topk(value_change_scores(v_new, v_cached), count, dim=-1, largest=False).indices


@dataclass
class _LayerCache:
    kv: LayerKV  # (B, H, L, Dh) each
    attn: Tensor  # (B, L, D) attention output before the residual add
    mlp: Tensor  # (B, L, D) MLP output before the residual add


class DLLMCache(AcceleratorBase):
    """Full refreshes cache K/V/attention/MLP per layer; other steps recompute the condition
    part on its interval, the image part on its interval, else the V-verify selection."""

    name = "dllm-cache"

    def __init__(self, config: DLLMCacheConfig) -> None:
        require_int(self.name, "prompt_interval", config.prompt_interval, 1)
        require_int(self.name, "gen_interval", config.gen_interval, 1)
        require_fraction(self.name, "transfer_ratio", config.transfer_ratio)
        super().__init__(config)

    def reset_state(self) -> None:
        self._layers: list[_LayerCache] | None = None  # per block, from the last full refresh

    @torch.no_grad()
    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        cfg = self.config
        refresh_gen = ctx.step % cfg.gen_interval == 0
        refresh_prompt = ctx.step % cfg.prompt_interval == 0
        h = model.embed(ctx.tokens, ctx.cond)  # (B, L, D): the fresh embedding, every step
        layout = self.layout(model, ctx)
        if (refresh_gen and refresh_prompt) or self._layers is None:
            h = self._full(model, h, layout)
            self.counts.full_forwards += 1
        else:
            h = self._partial(model, h, layout, refresh_gen, refresh_prompt)
        return self.output(model, model.final_features(h), ctx)

    def _full(self, model: BaseModel, h: Tensor, layout: SequenceLayout) -> Tensor:
        """All positions of every layer (the same ops as ``block_forward``), caching everything."""
        layers = []
        for block in model.blocks:
            q, k, v = block_qkv(block, h, layout)
            attn = block_attend(block, q, k, v, layout)
            h = h + attn
            mlp = block.mlp(h)
            h = h + mlp
            layers.append(_LayerCache(LayerKV(k, v), attn, mlp))
        self._layers = layers
        return h

    def _partial(
        self, model: BaseModel, h: Tensor, layout: SequenceLayout, refresh_gen: bool, refresh_prompt: bool
    ) -> Tensor:
        assert self._layers is not None
        P, L, B = layout.num_image_tokens, layout.seq_len, h.shape[0]
        image_pos = None if layout.image_first else image_index(layout, B, h.device)  # (B, P) or slices
        rows: list[int] = []  # query rows each layer recomputed this step
        fixed: list[Tensor] = []  # positions recomputed in every (cached) layer this step
        if refresh_prompt and not refresh_gen:
            fixed.append(condition_index(layout, B, h.device))
        transfer = self.config.transfer_ratio > 0  # the reference's flag, not the count
        verify = int(P * self.config.transfer_ratio)  # V-verify count (may be 0)
        value_pass = False
        for layer, (block, cache) in enumerate(zip(model.blocks, self._layers)):
            if layer == 0 and self.config.refresh_first_layer:
                h = _recompute_range(block, cache, h, layout, 0, L)  # layer 0: always in full
                rows.append(L)
            elif refresh_gen:  # not refresh_prompt: the image part
                if image_pos is None:  # image tokens at [0, P): one contiguous range, sliced
                    h = _recompute_range(block, cache, h, layout, 0, P)
                else:
                    h = _recompute_layer(block, cache, h, layout, image_pos)
                rows.append(P)
            else:
                parts = list(fixed)
                if transfer:
                    parts.append(self._verify(block, cache, h, layout, image_pos, verify))
                    value_pass = True
                positions = torch.cat(parts, dim=1) if len(parts) > 1 else (parts[0] if parts else None)
                if positions is not None and positions.shape[1]:
                    h = _recompute_layer(block, cache, h, layout, positions)  # positions: (B, Q)
                    rows.append(positions.shape[1])
                else:  # nothing to recompute: cached outputs only
                    h = h + cache.attn + cache.mlp
                    rows.append(0)
        if any(rows) or value_pass:  # (a V-verify value pass is part of this forward)
            self.counts.partial_forwards += 1
            self.counts.partial_positions += sum(rows) / (len(rows) * L)  # mean coverage over layers
        else:
            self.counts.other_calls += 1  # no block ran: embedding + final layers + head only
        return h

    @staticmethod
    def _verify(
        block: Block,
        cache: _LayerCache,
        h: Tensor,
        layout: SequenceLayout,
        image_pos: Tensor | None,
        count: int,
    ) -> Tensor:
        """Recompute V of all image tokens, pick the ``count`` that changed most, store the new V.
        image_pos: (B, P) sequence positions of the image tokens, None for [0, P). Returns the
        chosen tokens' sequence positions (B, count)."""
        P = layout.num_image_tokens
        if image_pos is None:
            v_new = block.value(h[:, :P])  # (B, Hkv, P, Dh)
            chosen = select_changed(v_new, cache.kv.v[:, :, :P], count)  # (B, count)
            cache.kv.v[:, :, :P] = v_new  # the reference keeps every image token's new V
            return chosen
        v_new = block.value(gather_positions(h, image_pos))  # (B, Hkv, P, Dh)
        idx = image_pos[:, None, :, None].expand(-1, v_new.shape[1], -1, v_new.shape[3])
        chosen = select_changed(v_new, torch.gather(cache.kv.v, 2, idx), count)  # (B, count) image indices
        cache.kv.v.scatter_(2, idx, v_new)
        return torch.gather(image_pos, 1, chosen)


def _recompute_range(
    block: Block, cache: _LayerCache, h: Tensor, layout: SequenceLayout, start: int, stop: int
) -> Tensor:
    """``_recompute_layer`` for the contiguous positions [start, stop) (slices, no gather)."""
    rows = None  # position ids are only looked up for position-aware blocks, and only for a sub-range
    if layout.position_ids is not None and (start, stop) != (0, h.shape[1]):
        rows = torch.arange(start, stop, device=h.device).expand(h.shape[0], -1)  # (B, stop - start)
    q, k, v = block_qkv(block, h[:, start:stop], layout, rows)  # (B, H, Q, Dh)
    cache.kv.k[:, :, start:stop] = k
    cache.kv.v[:, :, start:stop] = v
    cache.attn[:, start:stop] = block_attend(block, q, cache.kv.k, cache.kv.v, layout)
    h = h + cache.attn
    cache.mlp[:, start:stop] = block.mlp(h[:, start:stop])
    return h + cache.mlp


def _recompute_layer(
    block: Block, cache: _LayerCache, h: Tensor, layout: SequenceLayout, positions: Tensor
) -> Tensor:
    """One layer with fresh q/k/v, attention and MLP at ``positions`` (B, Q) and cached
    outputs elsewhere. h: (B, L, D) layer input -> layer output (B, L, D)."""
    q, k, v = block_qkv(block, gather_positions(h, positions), layout, positions)  # (B, H, Q, Dh)
    write_kv(cache.kv, positions, k, v)
    idx = positions[..., None].expand(-1, -1, h.shape[-1])  # (B, Q, D)
    cache.attn.scatter_(1, idx, block_attend(block, q, cache.kv.k, cache.kv.v, layout))
    h = h + cache.attn
    cache.mlp.scatter_(1, idx, block.mlp(torch.gather(h, 1, idx)))
    return h + cache.mlp
