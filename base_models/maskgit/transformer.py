"""The MaskGIT-pytorch v1 MaskTransformer, exposed through the block protocol.

Architecture and parameter names follow llvictorll/Maskgit-pytorch
(``Network/transformer.py``: MaskTransformer, TransformerEncoder, PreNorm, Attention,
FeedForward), the base model MIGM-Shortcut accelerates: one embedding table shared by
image tokens, [MASK], class tokens and the dropped-class token; a learned position
embedding over P image positions + 1 class position (the class token comes *after* the
image tokens); ``first_layer``; pre-norm blocks whose attention keeps
``nn.MultiheadAttention``'s ``in_proj_weight``/``out_proj`` layout; ``last_layer``; and a
head tied to the embedding table plus a per-position bias. The public checkpoints
(MaskGIT_ImageNet_256.pth / _512.pth) load into it with strict key matching.

The attention math runs through ``F.scaled_dot_product_attention`` on the MHA weights
(not ``nn.MultiheadAttention.forward``), so every block can run on a subset of query
positions against cached K/V (see ``bench.forward``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the MaskTransformer.

    grid: tokens per side (P = grid**2 image positions); codebook_size: V image codes;
    nclass: number of classes; hidden_dim/depth/heads/mlp_dim: transformer size
    (cost per forward ~ depth * (12 D^2 + 2 L D) * L); dropout: training only.
    """

    grid: int = 16
    codebook_size: int = 1024
    nclass: int = 1000
    hidden_dim: int = 768
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 3072
    dropout: float = 0.1

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def vocab(self) -> int:
        # image codes + [MASK] + classes + dropped class
        return self.codebook_size + 1 + self.nclass + 1

    def to_dict(self) -> dict:
        return asdict(self)


class PreNorm(nn.Module):
    """``norm`` then ``fn`` (parameter names as MaskGIT-pytorch)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn


class Attention(nn.Module):
    """Holds an ``nn.MultiheadAttention`` as ``mha`` for its parameter layout."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )


class TransformerEncoder(nn.Module):
    """``layers[i] = [PreNorm(Attention), PreNorm(FeedForward)]``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(cfg.hidden_dim, Attention(cfg.hidden_dim, cfg.heads, cfg.dropout)),
                    PreNorm(cfg.hidden_dim, FeedForward(cfg.hidden_dim, cfg.mlp_dim, cfg.dropout)),
                ]
            )
            for _ in range(cfg.depth)
        )


class MaskGITBlock:
    """Block-protocol view of ``transformer.layers[i]`` (no parameters of its own)."""

    def __init__(self, layer: nn.ModuleList, heads: int) -> None:
        self.attn_part, self.mlp_part = layer[0], layer[1]
        self.mha: nn.MultiheadAttention = self.attn_part.fn.mha
        self.num_heads = heads

    def _heads(self, x: Tensor) -> Tensor:
        b, q, d = x.shape  # (B, Q, D) -> (B, H, Q, Dh)
        return x.view(b, q, self.num_heads, d // self.num_heads).transpose(1, 2)

    def qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.linear(self.attn_part.norm(h), self.mha.in_proj_weight, self.mha.in_proj_bias)  # (B, Q, 3D)
        q, k, v = x.chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def value(self, h: Tensor) -> Tensor:
        d = h.shape[-1]
        w, b = self.mha.in_proj_weight[2 * d :], self.mha.in_proj_bias[2 * d :]
        return self._heads(F.linear(self.attn_part.norm(h), w, b))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        p = self.mha.dropout if self.mha.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, Q, Dh)
        b, _, n, _ = o.shape
        return self.mha.out_proj(o.transpose(1, 2).reshape(b, n, -1))

    def mlp(self, h: Tensor) -> Tensor:
        return self.mlp_part.fn.net(self.mlp_part.norm(h))


class MaskTransformer(nn.Module):
    """MaskGIT-pytorch v1 bidirectional transformer over P image tokens + 1 class token."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.hidden_dim, cfg.num_image_tokens
        self.tok_emb = nn.Embedding(cfg.vocab, d)
        self.pos_emb = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, p + 1, d), 0.0, 0.02))
        self.first_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(d, d),
        )  # fmt: skip
        self.transformer = TransformerEncoder(cfg)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(cfg.dropout), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12),
        )  # fmt: skip
        self.bias = nn.Parameter(torch.zeros(p + 1, cfg.vocab))
        self.blocks = [MaskGITBlock(layer, cfg.heads) for layer in self.transformer.layers]

    # ---- token ids
    def class_tokens(self, cond: Tensor) -> Tensor:
        """Class labels (B,) -> token ids; label -1 means dropped (unconditional)."""
        shifted = cond + self.cfg.codebook_size + 1
        dropped = torch.full_like(cond, self.cfg.codebook_size + 1 + self.cfg.nclass)
        return torch.where(cond < 0, dropped, shifted)

    def input_ids(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """(B, P) image tokens + (B,) labels -> (B, P + 1) ids, class token last."""
        return torch.cat([tokens, self.class_tokens(cond)[:, None]], dim=1)

    # ---- protocol pieces
    def embed(self, tokens: Tensor, cond: Tensor, positions: Tensor | None = None) -> Tensor:
        ids = self.input_ids(tokens, cond)  # (B, L)
        if positions is None:
            x = self.tok_emb(ids) + self.pos_emb  # (B, L, D)
        else:
            x = self.tok_emb(torch.gather(ids, 1, positions)) + self.pos_emb[0, positions]  # (B, Q, D)
        return self.first_layer(x)

    def embed_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.tok_emb(ids) + self.pos_emb[0, positions]

    def head(self, features: Tensor, positions: Tensor | None = None) -> Tensor:
        v = self.cfg.codebook_size  # logits over image codes only (no [MASK])
        w = self.tok_emb.weight[:v]  # (V, D)
        if positions is None:
            bias = self.bias[: features.shape[1], :v]  # (P, V)
        else:
            bias = self.bias[positions, :v]  # (B, Q, V)
        return features @ w.t() + bias

    def forward(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """Training forward: (B, P) tokens, (B,) labels (-1 = dropped) ->
        (B, P, V + 1) logits over codes and [MASK], as MaskGIT-pytorch returns."""
        h = self.embed(tokens, cond)
        for blk in self.blocks:
            q, k, v = blk.qkv(h)
            h = h + blk.attend(q, k, v)
            h = h + blk.mlp(h)
        f = self.last_layer(h)
        p = self.cfg.num_image_tokens
        logits = f @ self.tok_emb.weight.t() + self.bias
        return logits[:, :p, : self.cfg.codebook_size + 1]
