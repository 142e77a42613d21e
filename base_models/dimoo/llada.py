"""The LLaDA transformer of Lumina-DiMOO ("llama" block type), split into block primitives.

Follows Alpha-VLLM/Lumina-DiMOO ``model/modeling_llada.py`` (``RMSLayerNorm``,
``RotaryEmbedding``, ``LLaDALlamaBlock``, ``LLaDAModel``):

- RMSNorm: normalise in float32 (x * rsqrt(mean(x^2) + eps)), cast back to the input dtype, then
  multiply by the weight (no bias).
- Attention: q/k/v projections without bias, GQA with ``n_kv_heads`` (k, v repeated per group,
  ``repeat_interleave`` as the reference), bidirectional SDPA, ``attn_out``.
- Rotary: inv_freq = 1 / theta^(arange(0, Dh, 2) / Dh), angles = position * inv_freq,
  concatenated twice; rotate_half splits the head dim in halves, (-x2, x1); computed in
  float32 when ``rope_full_precision``. Applied here at *given absolute positions*, so a subset
  of query rows against cached K/V gets exactly the angles a full forward gives those rows.
- MLP (SwiGLU for activation_type "silu"): ``ff_out(silu(ff_proj(x)) * up_proj(x))``, i.e.
  ff_proj is the gate, up_proj the up projection, ff_out the down projection.
- ``ln_f`` then the head: ``wte.weight`` when ``weight_tying``, else ``transformer.ff_out``;
  logits / sqrt(D) when ``scale_logits``.

Differences from the reference, on purpose: the reference builds an attention bias from the
padding mask and then passes ``attn_mask=None`` to SDPA (it only ever runs batches of one); here
the key padding mask is really applied. Dropout is omitted (inference only).
Parameter names equal the public checkpoint keys (``model.transformer.blocks.N.q_proj.weight``...).
RMSNorm and the rotary functions live in ``bench.nn`` (shared with DiMOO-Shortcut) and are
re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_models.dimoo.config import DiMOOConfig
from bench.nn import RMSNorm, apply_rotary, rotary_angles, rotate_half

__all__ = ["LLaDABlock", "LLaDAModel", "RMSNorm", "apply_rotary", "rotary_angles", "rotate_half"]


class LLaDABlock(nn.Module):
    """One "llama" block. ``h = h + attend(*qkv(h, pos)); h = h + mlp(h)``.

    The primitives are what the block protocol uses: a partial step runs ``qkv`` on the
    recomputed rows at their absolute positions, writes k, v into the cache, and ``attend``s
    over all cached keys.
    """

    def __init__(self, cfg: DiMOOConfig) -> None:
        super().__init__()
        d, dh = cfg.d_model, cfg.head_dim
        self.cfg = cfg
        self.num_heads = cfg.n_heads
        self.num_kv_heads = cfg.kv_heads
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, cfg.kv_heads * dh, bias=False)
        self.v_proj = nn.Linear(d, cfg.kv_heads * dh, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, cfg.hidden_size, bias=False)  # gate
        self.up_proj = nn.Linear(d, cfg.hidden_size, bias=False)  # up
        self.ff_out = nn.Linear(cfg.hidden_size, d, bias=False)  # down

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        b, q, _ = x.shape  # (B, Q, heads * Dh) -> (B, heads, Q, Dh)
        return x.view(b, q, heads, self.cfg.head_dim).transpose(1, 2)

    def qkv(self, h: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (B, Q, D) at absolute ``positions`` (B, Q) -> q (B, H, Q, Dh), k, v (B, Hkv, Q, Dh);
        rotary already applied to q and k."""
        x = self.attn_norm(h)
        q = self._heads(self.q_proj(x), self.num_heads)
        k = self._heads(self.k_proj(x), self.num_kv_heads)
        v = self._heads(self.v_proj(x), self.num_kv_heads)
        sin, cos = rotary_angles(positions, self.cfg.head_dim, self.cfg.rope_theta)
        full = self.cfg.rope_full_precision
        return apply_rotary(q, sin, cos, full), apply_rotary(k, sin, cos, full), v

    def value(self, h: Tensor) -> Tensor:
        """Pre-norm + value projection only: (B, Q, D) -> (B, Hkv, Q, Dh)."""
        return self._heads(self.v_proj(self.attn_norm(h)), self.num_kv_heads)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """q (B, H, Q, Dh); k, v (B, Hkv, L, Dh); key_mask (B, L) bool, True = a real token.
        -> (B, Q, D), the attention branch before the residual add."""
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:  # GQA: each k/v head serves ``groups`` consecutive query heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Q, Dh)
        b, _, n, _ = o.shape
        return self.attn_out(o.transpose(1, 2).reshape(b, n, -1))

    def mlp(self, h: Tensor) -> Tensor:
        """SwiGLU branch: ff_out(silu(ff_proj(x)) * up_proj(x)), x = ff_norm(h). (B, Q, D)."""
        x = self.ff_norm(h)
        return self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))

    def forward(self, h: Tensor, positions: Tensor, key_mask: Tensor | None = None) -> Tensor:
        h = h + self.attend(*self.qkv(h, positions), key_mask)
        return h + self.mlp(h)


class LLaDAModel(nn.Module):
    """``model.transformer.{wte, blocks, ln_f, ff_out}`` with the public checkpoint's key names."""

    def __init__(self, cfg: DiMOOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        parts = {
            "wte": nn.Embedding(cfg.table_size, cfg.d_model),
            "blocks": nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
            "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
        }
        if not cfg.weight_tying:
            parts["ff_out"] = nn.Linear(cfg.d_model, cfg.table_size, bias=False)
        self.model = nn.Module()
        self.model.transformer = nn.ModuleDict(parts)

    @property
    def transformer(self) -> nn.ModuleDict:
        return self.model.transformer

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    @property
    def head_weight(self) -> Tensor:
        """(table_size, D): the output head (the embedding table when tied)."""
        t = self.transformer
        return t.wte.weight if self.cfg.weight_tying else t.ff_out.weight

    def embed(self, ids: Tensor) -> Tensor:
        """(B, Q) token ids -> (B, Q, D). No position embedding: positions enter through rotary."""
        x = self.transformer.wte(ids)
        return x * (self.cfg.d_model**0.5) if self.cfg.input_emb_norm else x

    def final_features(self, h: Tensor) -> Tensor:
        """ln_f: (B, Q, D) -> (B, Q, D), the "last-layer features" accelerators predict."""
        return self.transformer.ln_f(h)

    def logits(self, features: Tensor, rows: slice | None = None) -> Tensor:
        """features (B, Q, D) -> logits (B, Q, table_size), or only head rows ``rows``."""
        w = self.head_weight if rows is None else self.head_weight[rows]
        out = features @ w.t()
        return out / self.cfg.d_model**0.5 if self.cfg.scale_logits else out

    def forward(self, ids: Tensor, positions: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        """Full forward: ids (B, L), positions (B, L) (default 0..L-1), key_mask (B, L) bool
        -> final features (B, L, D)."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h, positions, key_mask)
        return self.final_features(h)

    def forward_cached(
        self, ids: Tensor, positions: Tensor, key_mask: Tensor | None = None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Full forward that also returns every block's (k, v), each (B, Hkv, L, Dh)."""
        h, caches = self.embed(ids), []
        for block in self.blocks:
            q, k, v = block.qkv(h, positions)
            caches.append((k, v))
            h = h + block.attend(q, k, v, key_mask)
            h = h + block.mlp(h)
        return self.final_features(h), caches

    def forward_rows(
        self,
        ids: Tensor,
        rows: Tensor,
        positions: Tensor,
        caches: list[tuple[Tensor, Tensor]],
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """Partial forward: only sequence indices ``rows`` (B, Q) are recomputed, at rotary
        ``positions`` (B, L) gathered for those rows; their fresh k, v overwrite the cached ones
        (in place) and the queries attend over all L cached keys. Returns features (B, Q, D)."""
        row_ids = torch.gather(ids, 1, rows)
        row_pos = torch.gather(positions, 1, rows)
        h = self.embed(row_ids)
        for block, (k_all, v_all) in zip(self.blocks, caches):
            q, k, v = block.qkv(h, row_pos)
            idx = rows[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            k_all.scatter_(2, idx, k)
            v_all.scatter_(2, idx, v)
            h = h + block.attend(q, k_all, v_all, key_mask)
            h = h + block.mlp(h)
        return self.final_features(h)
