"""Full and partial forwards over the block protocol, written once for every model.

A *partial* forward runs the blocks only on a subset of query positions while
attending to the cached K/V of all positions; the K/V of the recomputed positions
are written into the cache first, so the cache stays the freshest view we have.

Every function works on the batch's ``SequenceLayout`` (``layout_of``): image tokens at
per-row sequence positions, position ids for rotary blocks, a key padding mask. The default
layout (image tokens at [0, P), no position input, no padding) takes exactly the code path it
always took: slices, ``block.qkv(h)``, ``block.attend(q, k, v)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.protocol import BaseModel, Block, LayerKV, SequenceLayout


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


# ------------------------------------------------------------------------ layout
def layout_of(model: BaseModel, cond: Tensor) -> SequenceLayout:
    """The layout of the stacked rows ``cond`` (B,): the model's ``sequence_layout(cond)`` when
    it has one, else the default (image tokens at [0, P), the condition at [P, L))."""
    fn = getattr(model, "sequence_layout", None)
    if fn is None:
        return SequenceLayout(model.seq_len, model.num_image_tokens)
    return fn(cond)


def image_index(layout: SequenceLayout, rows: int, device: torch.device) -> Tensor:
    """(B, P) sequence positions of the image tokens."""
    if layout.image_positions is not None:
        return layout.image_positions
    return torch.arange(layout.num_image_tokens, device=device).expand(rows, -1)


def condition_index(layout: SequenceLayout, rows: int, device: torch.device) -> Tensor:
    """(B, C) sequence positions of the condition tokens (everything that is not an image token)."""
    if layout.condition_positions is not None:
        return layout.condition_positions
    P, L = layout.num_image_tokens, layout.seq_len
    return torch.arange(P, L, device=device).expand(rows, L - P)


def to_sequence(layout: SequenceLayout, image_pos: Tensor) -> Tensor:
    """(B, G) image indices j in [0, P) -> (B, G) their sequence positions."""
    if layout.image_positions is None:
        return image_pos
    return torch.gather(layout.image_positions, 1, image_pos)


def image_rows(layout: SequenceLayout, x: Tensor) -> Tensor:
    """(B, L, ...) per-position values -> (B, P, ...) those of the image tokens, in image order."""
    if layout.image_positions is None:
        return x[:, : layout.num_image_tokens]
    return gather_positions(x, layout.image_positions)


def block_qkv(
    block: Block, h: Tensor, layout: SequenceLayout, positions: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``block.qkv`` of h (B, Q, D) at sequence ``positions`` (B, Q) (None: all L in order),
    with the rows' position ids when the layout has them."""
    if layout.position_ids is None:
        return block.qkv(h)
    ids = layout.position_ids if positions is None else torch.gather(layout.position_ids, 1, positions)
    return block.qkv(h, ids)


def block_attend(block: Block, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
    """``block.attend`` over all keys, with the layout's padding mask when it has one."""
    if layout.key_mask is None:
        return block.attend(q, k, v)
    return block.attend(q, k, v, layout.key_mask)


# ------------------------------------------------------------------------ forwards
_PLAIN = SequenceLayout(0, 0)  # no position ids, no padding: ``qkv(h)``, ``attend(q, k, v)``


def block_forward(
    block: Block,
    h: Tensor,
    cache: LayerKV | None = None,
    positions: Tensor | None = None,
    layout: SequenceLayout | None = None,
) -> tuple[Tensor, LayerKV]:
    """Run one block.

    h: (B, Q, D) hidden states at ``positions`` (B, Q); positions=None means all L
    positions in order (a full pass, which (re)fills the cache). With positions, the
    fresh K/V are written into ``cache`` and the queries attend over all L entries.
    layout: the batch's (None: the default layout). Returns the new hidden states (B, Q, D)
    and the layout's (updated) cache.
    """
    layout = layout or _PLAIN
    q, k, v = block_qkv(block, h, layout, positions)  # (B, H, Q, Dh) each
    if positions is None:
        cache = LayerKV(k, v)
    else:
        if cache is None:
            raise ValueError("a partial block forward needs the layer's K/V cache")
        write_kv(cache, positions, k, v)
    h = h + block_attend(block, q, cache.k, cache.v, layout)
    h = h + block.mlp(h)
    return h, cache


def full_forward(
    model: BaseModel, tokens: Tensor, cond: Tensor, layout: SequenceLayout | None = None
) -> tuple[Tensor, list[LayerKV]]:
    """All blocks on all positions. tokens (B, P), cond (B,) -> features (B, L, D), caches."""
    layout = layout or layout_of(model, cond)
    h = model.embed(tokens, cond)
    caches = []
    for block in model.blocks:
        h, kv = block_forward(block, h, layout=layout)
        caches.append(kv)
    return model.final_features(h), caches


def partial_forward(
    model: BaseModel,
    tokens: Tensor,
    cond: Tensor,
    positions: Tensor,
    caches: list[LayerKV],
    layout: SequenceLayout | None = None,
) -> Tensor:
    """Blocks run only on ``positions`` (B, Q) (sequence positions, may include
    condition tokens), attending to ``caches`` (updated in place).
    Returns final features (B, Q, D) of those positions."""
    layout = layout or layout_of(model, cond)
    h = model.embed(tokens, cond, positions)  # (B, Q, D): only the recomputed rows
    for block, kv in zip(model.blocks, caches):
        h, _ = block_forward(block, h, kv, positions, layout)
    return model.final_features(h)


def logits_of(model: BaseModel, features: Tensor, layout: SequenceLayout | None = None) -> Tensor:
    """(B, L, D) features -> (B, P, V) logits of the image positions of ``layout``.

    layout None: the default layout, refused for a model with its own ``sequence_layout``
    (taking rows [0, P) there would read the prompt's features as image features)."""
    if layout is None:
        if getattr(model, "sequence_layout", None) is not None:
            raise ValueError(f"logits_of: base model {model.name!r} has its own sequence layout; pass it")
        return model.head(features[:, : model.num_image_tokens])
    return model.head(image_rows(layout, features))
