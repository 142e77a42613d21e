"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode``, attention included.

FLOPs are the same on every machine, so they are reported beside wall-clock latency
(TorchBench / ``torch.utils.benchmark`` practice). Convention: one multiply-add = 2 FLOPs,
as in ``torch.utils.flop_counter`` (``mm_flop``: 2 * M * K * N).

Why a custom mapping: torch 2.14's counter has formulas for the CUDA attention kernels
(flash / efficient / cuDNN) but none for the kernels attention dispatches to on CPU, so
on CPU it silently counts 0 FLOPs for

* ``F.scaled_dot_product_attention`` -> ``aten._scaled_dot_product_flash_attention_for_cpu``
  (checked on this machine: this is the op the dispatcher reaches, with or without a mask);
* the ``nn.MultiheadAttention`` inference fast path -> ``aten._native_multi_head_attention``
  (a fused CPU kernel that also does the in/out projections);
* ``aten._scaled_dot_product_fused_attention_overrideable`` (out-of-tree backends) and
  ``aten._scaled_dot_product_attention_math_for_mps``.

``aten._scaled_dot_product_attention_math`` needs nothing: it is a composite op the counter
decomposes into ``bmm``s, which it counts (with the same 4 * B * H * Lq * Lk * Dh total).
Causal masking is ignored, as in torch's own ``sdpa_flop`` (MIGMs attend bidirectionally).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def attention_flops(query_shape: Any, key_shape: Any, value_shape: Any) -> int:
    """FLOPs of softmax(q k^T) v: 2*B*H*Lq*Lk*Dh for q k^T plus 2*B*H*Lq*Lk*Dv for the
    weighted sum. Shapes (B, H, L, Dh) (or (H, L, Dh)); key/value may have fewer heads
    (grouped-query attention broadcasts them to the query's heads)."""
    *batch_q, lq, dh = query_shape
    *_, lk, dk = key_shape
    *_, lv, dv = value_shape
    if dk != dh or lv != lk:
        raise ValueError(
            f"incompatible attention shapes q={tuple(query_shape)}, k={tuple(key_shape)}, "
            f"v={tuple(value_shape)}"
        )
    rows = 1
    for d in batch_q:  # B * H of the query
        rows *= int(d)
    return 2 * rows * lq * lk * dh + 2 * rows * lq * lk * dv


def _sdpa_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return attention_flops(query_shape, key_shape, value_shape)


def _native_mha_formula(
    query_shape, key_shape, value_shape, embed_dim, num_head, *args, out_shape=None, **kwargs
) -> int:
    """``aten._native_multi_head_attention``: q/k/v in-projections, attention, out-projection.

    query (B, Lq, D), key/value (B, Lk, D) (a 2-D input is one unbatched sequence)."""

    def batch_len(shape) -> tuple[int, int]:
        return (1, int(shape[0])) if len(shape) == 2 else (int(shape[0]), int(shape[1]))

    b, lq = batch_len(query_shape)
    _, lk = batch_len(key_shape)
    d = int(embed_dim)
    proj = 2 * b * lq * d * d + 2 * 2 * b * lk * d * d  # q, then k and v projections
    attn = 4 * b * lq * lk * d  # all heads together: H * Dh = D
    out = 2 * b * lq * d * d
    return proj + attn + out


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas for the attention ops torch's counter does not know, keyed by op packet.
    Only ops that exist in this torch build and have no formula already are added."""
    wanted = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_formula,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_formula,
        "_scaled_dot_product_attention_math_for_mps": _sdpa_formula,
        "_native_multi_head_attention": _native_mha_formula,
    }
    known = FlopCounterMode(display=False).flop_registry
    mapping = {}
    for name, formula in wanted.items():
        op = getattr(aten, name, None)
        if op is not None and op not in known:
            mapping[op] = formula
    return mapping


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (no table printed) that also counts CPU attention kernels."""
    return FlopCounterMode(display=False, custom_mapping=_custom_mapping())


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of calling ``fn()`` once (forward ops as dispatched; run it under
    ``torch.no_grad`` yourself if it should not build a graph)."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())
