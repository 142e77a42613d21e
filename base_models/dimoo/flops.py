"""Analytic FLOPs of one Lumina-DiMOO forward and one DiMOO-Shortcut call at given shapes.

Convention of ``bench.flops`` / ``torch.utils.flop_counter``: a multiply-add is 2 FLOPs; matmuls
and attention (4 * Q * K * D for softmax(q k^T) v over all heads) are counted, element-wise work
(norms, rotary, SiLU, softmax) is not. Tested against ``bench.flops.count_flops`` on tiny shapes.

Base forward (Alpha-VLLM/Lumina-DiMOO ``model/modeling_llada.py`` ``LLaDALlamaBlock``), per
block and per row: q and attn_out 2 * 2 D^2, k and v 2 * 2 D Dkv (Dkv = n_kv_heads * Dh),
attention 4 L D, SwiGLU 3 * 2 D F. The head: the reference computes all L rows x the full
width (``ff_out``); the harness needs the P image rows x V codes only.

DiMOO-Shortcut (Kaiwen-Zhu/MIGM-Shortcut ``DiMOO-Shortcut/model/shortcut_model.py``
``MDMShortcut``, defaults of ``infer.py``: n_block 1, bottleneck_ratio 2, embed_t, cross
attention): the LLaDA config copied with d_model -> d = round(D / ratio) and everything else
unchanged (n_heads, n_kv_heads, mlp_hidden_size F), so head dim and k/v width halve but the
MLP keeps F. One call on a sequence of T rows with K cross-attention tokens (the newly revealed
image tokens, plus the prompt tokens in the conditional stream): proj_in 2 T D d,
new_token_proj_in 2 K D d; cross block: q 2 T d^2, k, v 2 * 2 K d dkv, attention 4 T K d,
attn_out 2 T d^2, MLP 6 T d F; self block: a LLaDA block at width d over T rows; adaLN
(timestep MLP 256 -> m -> d with m = round(sqrt(256 d)), modulation d -> 2d) per image;
proj_out 2 T d D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from base_models.dimoo.config import DiMOOConfig

# Lumina-DiMOO's transformer: LLaDA-8B's shapes (GSAI-ML/LLaDA-8B config.json: d_model 4096,
# 32 layers, 32 heads, n_kv_heads 32, mlp_hidden_size 12288, rope_theta 500000, untied head),
# vocabulary widened by the 8192 aMUSEd-VQ codes; head width = image-code offset 126356 + 8192
# (``config.py`` image_token_offset; the reference's offset = head width - codebook size).
DIMOO_8B = DiMOOConfig(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                       rope_theta=500000.0, vocab_size=134548, embedding_size=134548, weight_tying=False,
                       mask_token_id=126336)  # fmt: skip
DIMOO_CODEBOOK = 8192


def dimoo_seq_len(prompt_tokens: int, height: int = 1024, width: int = 1024) -> tuple[int, int]:
    """(L, P) of one stream: prompt + BOA, BOI + rows x (cols + newline) + EOI, EOA."""
    rows, cols = height // 16, width // 16
    return prompt_tokens + 4 + rows * (cols + 1), rows * cols


def block_flops(rows: int, keys: int, d: int, kv_dim: int, hidden: int, key_rows: int | None = None) -> int:
    """One LLaDA block: ``rows`` query rows attending over ``keys`` keys; k/v projections run on
    ``key_rows`` rows (default: the query rows, self-attention)."""
    key_rows = rows if key_rows is None else key_rows
    proj = 2 * rows * d * d * 2 + 2 * key_rows * d * kv_dim * 2  # q, attn_out; k, v
    attn = 4 * rows * keys * d
    mlp = 3 * 2 * rows * d * hidden
    return proj + attn + mlp


@dataclass(frozen=True)
class ForwardFlops:
    blocks: int  # all transformer blocks
    head_image: int  # P image rows x V codes (what the harness computes)
    head_reference: int  # all L rows x the full head width (what the reference computes)

    @property
    def total(self) -> int:
        return self.blocks + self.head_image


def base_forward_flops(cfg: DiMOOConfig, seq_len: int, image_tokens: int, codebook: int) -> ForwardFlops:
    """One full forward of one stream (B = 1) of ``seq_len`` rows."""
    kv_dim = cfg.kv_heads * cfg.head_dim
    blocks = cfg.n_layers * block_flops(seq_len, seq_len, cfg.d_model, kv_dim, cfg.hidden_size)
    return ForwardFlops(
        blocks=blocks,
        head_image=2 * image_tokens * cfg.d_model * codebook,
        head_reference=2 * seq_len * cfg.d_model * cfg.table_size,
    )


def shortcut_flops(
    cfg: DiMOOConfig,
    seq_len: int,
    new_tokens: int,
    bottleneck_ratio: float = 2,
    n_block: int = 1,
    embed_t: bool = True,
    cross_attention: bool = True,
) -> int:
    """One MDMShortcut call on one stream (B = 1): T = ``seq_len`` rows, K = ``new_tokens``."""
    big, t, k = cfg.d_model, seq_len, new_tokens
    d = round(big / bottleneck_ratio)
    kv_dim = cfg.kv_heads * (d // cfg.n_heads)
    f = cfg.hidden_size
    total = 0
    if d != big:
        total += 2 * t * big * d * 2  # proj_in, proj_out
        if cross_attention:
            total += 2 * k * big * d  # new_token_proj_in
    for _ in range(n_block):
        if cross_attention:
            total += block_flops(t, k, d, kv_dim, f, key_rows=k)
        else:  # the ablation: a second self-attention block
            total += block_flops(t, t, d, kv_dim, f)
        total += block_flops(t, t, d, kv_dim, f)
    if embed_t:
        mid = round(math.sqrt(d * 256))
        total += 2 * (256 * mid + mid * d) + 2 * d * 2 * d
    return total


def dimoo_cost_table(prompt_tokens: int = 64, height: int = 1024, width: int = 1024, steps: int = 64) -> dict:
    """Base forward vs shortcut call at DiMOO's real shapes, K = P / steps new tokens (+ prompt
    tokens in the conditional stream, as DiMOO-Shortcut feeds them)."""
    seq, p = dimoo_seq_len(prompt_tokens, height, width)
    base = base_forward_flops(DIMOO_8B, seq, p, DIMOO_CODEBOOK)
    k = p // steps + prompt_tokens
    net = shortcut_flops(DIMOO_8B, seq, k)
    head = base.head_image  # a shortcut step still needs the head (masked rows at most P)
    return {
        "seq_len": seq,
        "image_tokens": p,
        "new_tokens": k,
        "base_blocks": base.blocks,
        "base_head_image": base.head_image,
        "base_head_reference": base.head_reference,
        "shortcut": net,
        "ratio_network_vs_blocks": net / base.blocks,
        "ratio_with_head": (net + head) / (base.blocks + head),
    }
