"""FLOP counting, attention included, against hand-computed counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.flops import attention_flops, count_flops


def test_sdpa_and_linear_exact_counts():
    B, H, Lq, Lk, Dh, D_in, D_out = 2, 3, 5, 7, 8, 24, 10
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, Lq, Dh, generator=g)
    k, v = torch.randn(2, B, H, Lk, Dh, generator=g)
    linear = torch.nn.Linear(D_in, D_out)
    x = torch.randn(B, Lq, D_in, generator=g)

    def fn():
        F.scaled_dot_product_attention(q, k, v)  # q k^T and weights @ v
        linear(x)

    with torch.no_grad():
        total = count_flops(fn)
    assert total == 4 * B * H * Lq * Lk * Dh + 2 * B * Lq * D_in * D_out


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "grad"])
def test_sdpa_counted_in_every_autograd_mode(mode):
    q = torch.randn(1, 2, 4, 8, requires_grad=mode == "grad")
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "grad": torch.enable_grad}[mode]
    with ctx():
        assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * 2 * 4 * 4 * 8


def test_masked_sdpa_is_counted():
    q = torch.randn(1, 2, 4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    with torch.no_grad():
        assert (
            count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask)) == 4 * 2 * 4 * 4 * 8
        )


def test_multihead_attention_fast_and_slow_paths_agree():
    B, L, D, H = 2, 6, 32, 4
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    x = torch.randn(B, L, D)
    expected = 4 * 2 * B * L * D * D + 4 * B * L * L * D  # q, k, v, out projections + attention
    with torch.no_grad():  # inference fast path: one fused aten._native_multi_head_attention
        fast = count_flops(lambda: mha(x, x, x, need_weights=False))
    slow = count_flops(lambda: mha(x, x, x, need_weights=False))  # linear + sdpa
    assert fast == slow == expected


def test_attention_flops_handles_grouped_query_heads():
    # 8 query heads sharing 2 key/value heads: cost follows the query heads.
    assert attention_flops((1, 8, 4, 16), (1, 2, 6, 16), (1, 2, 6, 16)) == 4 * 8 * 4 * 6 * 16
    with pytest.raises(ValueError, match="incompatible"):
        attention_flops((1, 2, 4, 16), (1, 2, 6, 8), (1, 2, 6, 8))
