"""Full and partial forwards over the block protocol, written once for every model.

A *partial* forward runs the blocks only on a subset of query positions while
attending to the cached K/V of all positions; the K/V of the recomputed positions
are written into the cache first, so the cache stays the freshest view we have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.protocol import BaseModel, Block, LayerKV


def gather_positions(x: Tensor, positions: Tensor) -> Tensor:
    """x: (B, L, ...) , positions: (B, Q) long -> (B, Q, ...)."""
    idx = positions.view(*positions.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, idx)


def scatter_positions(x: Tensor, positions: Tensor, values: Tensor) -> Tensor:
    """Out-of-place: x (B, L, ...) with rows ``positions`` (B, Q) replaced by values (B, Q, ...)."""
    idx = positions.view(*positions.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.scatter(1, idx, values)


def write_kv(cache: LayerKV, positions: Tensor, k: Tensor, v: Tensor) -> None:
    """Write k, v (B, H, Q, Dh) of ``positions`` (B, Q) into cache (B, H, L, Dh) in place."""
    idx = positions[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
    cache.k.scatter_(2, idx, k)
    cache.v.scatter_(2, idx, v)


def block_forward(
    block: Block,
    h: Tensor,
    cache: LayerKV | None = None,
    positions: Tensor | None = None,
) -> tuple[Tensor, LayerKV]:
    """Run one block.

    h: (B, Q, D) hidden states at ``positions`` (B, Q); positions=None means all L
    positions in order (a full pass, which (re)fills the cache). With positions, the
    fresh K/V are written into ``cache`` and the queries attend over all L entries.
    Returns the new hidden states (B, Q, D) and the layer's (updated) cache.
    """
    q, k, v = block.qkv(h)  # (B, H, Q, Dh) each
    if positions is None:
        cache = LayerKV(k, v)
    else:
        if cache is None:
            raise ValueError("a partial block forward needs the layer's K/V cache")
        write_kv(cache, positions, k, v)
    h = h + block.attend(q, cache.k, cache.v)
    h = h + block.mlp(h)
    return h, cache


def full_forward(model: BaseModel, tokens: Tensor, cond: Tensor) -> tuple[Tensor, list[LayerKV]]:
    """All blocks on all positions. tokens (B, P), cond (B,) -> features (B, L, D), caches."""
    h = model.embed(tokens, cond)
    caches = []
    for block in model.blocks:
        h, kv = block_forward(block, h)
        caches.append(kv)
    return model.final_features(h), caches


def partial_forward(
    model: BaseModel,
    tokens: Tensor,
    cond: Tensor,
    positions: Tensor,
    caches: list[LayerKV],
) -> Tensor:
    """Blocks run only on ``positions`` (B, Q) (sequence positions, may include
    condition tokens), attending to ``caches`` (updated in place).
    Returns final features (B, Q, D) of those positions."""
    h = model.embed(tokens, cond, positions)  # (B, Q, D): only the recomputed rows
    for block, kv in zip(model.blocks, caches):
        h, _ = block_forward(block, h, kv, positions)
    return model.final_features(h)


def logits_of(model: BaseModel, features: Tensor) -> Tensor:
    """(B, L, D) features -> (B, P, V) logits of the image positions."""
    return model.head(features[:, : model.num_image_tokens])
