"""The MIGM-Shortcut network: previous last-layer features + just-revealed tokens -> next features.

Reference: Zhu et al., "Accelerating Masked Image Generation by Learning Latent Controlled
Dynamics" (arXiv 2602.23996), and Kaiwen-Zhu/MIGM-Shortcut,
``MaskGIT-Shortcut/Network/shortcut_model.py`` (``MaskGITShortcut``, ``ShortcutAttnBlock``,
``TimestepEmbedder``). What carries over from the reference:

* a bottleneck: features and new-token embeddings are projected from D to round(D / r)
  (``bottleneck_ratio``; r = 2 in the reference's training command) and back at the end;
  r = 1 uses no projections at all;
* ``num_blocks`` blocks (reference ``n_block``, default 1), each a pre-norm cross-attention
  (queries from the normalised features; keys/values from the projected new-token
  embeddings, *not* normalised, as the reference passes them straight to the attention)
  with a 4x feed-forward, then a self-attention with a 4x feed-forward whose *queries* come
  from the normalised features and whose keys/values come from the un-normalised features
  (the reference's ``PreNorm`` normalises only its first argument and its self-attention is
  called as ``self_attn(x, key=x, value=x)``);
* a final ``LayerNorm -> Linear -> GELU -> LayerNorm`` (eps 1e-12), then adaLN
  ``x * (1 + scale) + shift`` with scale/shift from the time embedding (applied once,
  after the final layer, before the output projection);
* the time is the mask ratio after the reveal of the step the features came from (the
  fraction of image tokens still masked when the *target* step runs), multiplied by 1000
  and embedded with DiT's sinusoidal ``TimestepEmbedder`` (256 frequencies, MLP of width
  round(sqrt(d * 256)), SiLU);
* new tokens are embedded with the base model's own (frozen) token and position tables;
* output = previous features + predicted delta (the "average velocity" over one step).
  The reference does not zero-initialise the output projection; neither do we.

The features cover all L sequence positions (image tokens and condition tokens), as in
the reference (1025 = 1024 image tokens + the class token).

``no_cross_attention`` is the paper's ablation "replacing cross-attention with
self-attention (removing token input)": the first attention of every block attends over
the features themselves (normalised queries, un-normalised keys/values, like the
reference's self-attention) and the new tokens are never looked at.

``normalized_self_kv`` (off by default) is this project's earlier variant, which also
normalised the self-attention's keys and values; kept as a named option so the two can be
compared, never the default.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.protocol import BaseModel

TIME_FREQUENCIES = 256  # DiT TimestepEmbedder.frequency_embedding_size
TIME_SCALE = 1000.0  # the reference embeds mask_ratio * 1000


@dataclass(frozen=True)
class ShortcutNetConfig:
    """Shape of the shortcut network (cost per call ~ L * d^2 * num_blocks * (8 + 4 * mlp_ratio)
    with d = D / ratio; it must stay a small fraction of one base forward).

    ratio: bottleneck D -> round(D / ratio). Larger: cheaper and less expressive (the paper
        finds both too small and too large hurt the speed/quality frontier). Reference: 2.
    num_blocks: cross-attention + self-attention pairs. More: costlier, more expressive. Reference: 1.
    heads: attention heads inside the bottleneck (d must be divisible by it).
    mlp_ratio: feed-forward width / d (reference: 4).
    time_embedding: adaLN conditioning on the mask ratio (reference ``embed_t``; off is its
        ``--no_embed_t`` ablation).
    no_cross_attention: ablation; ignore the new tokens (self-attention over the features
        instead of cross-attention to the tokens). The paper reports over-smoothed images.
    dropout: attention/feed-forward dropout while training (reference trains with 0).
    normalized_self_kv: not the reference; the self-attentions take keys/values from the
        LayerNorm-ed features too (this project's pre-fix variant). Off = the reference.
    """

    ratio: float = 2.0
    num_blocks: int = 1
    heads: int = 4
    mlp_ratio: float = 4.0
    time_embedding: bool = True
    no_cross_attention: bool = False
    dropout: float = 0.0
    normalized_self_kv: bool = False

    def __post_init__(self) -> None:
        if not self.ratio > 0:
            raise ValueError(f"shortcut net: ratio must be > 0, got {self.ratio}")
        if self.num_blocks < 1 or self.heads < 1:
            raise ValueError(
                f"shortcut net: num_blocks and heads must be >= 1, got {self.num_blocks}, {self.heads}"
            )
        if not self.mlp_ratio > 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"shortcut net: need mlp_ratio > 0 and dropout in [0, 1), got "
                f"{self.mlp_ratio}, {self.dropout}"
            )

    def inner_dim(self, dim: int) -> int:
        """Bottleneck width d = round(D / ratio) (reference rounding)."""
        return round(dim / self.ratio)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShortcutNetConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown shortcut net options {unknown}")
        return cls(**data)


# ---------------------------------------------------------------------------- tables
def model_device(model: BaseModel) -> torch.device:
    """The device a protocol-only base model lives on (where its initial tokens are made)."""
    return model.initial_tokens(1).device


@torch.no_grad()
def embedding_tables(model: BaseModel) -> tuple[Tensor, Tensor]:
    """Split ``model.embed_tokens`` into a (V, D) token table and a (P, D) position table.

    The protocol promises ``embed_tokens(ids, positions)`` is the *raw* token + position
    embedding, i.e. additive: E(v, p) = T[v] + Q[p]. Then with A[v] = E(v, 0) and
    C[p] = E(0, p): tok = A and pos = C - A[0] give tok[v] + pos[p] = E(v, p) exactly (up to
    float rounding). Additivity is checked on random pairs; a model whose embedding is not
    additive gets a clear error rather than silently wrong tables.
    Returns float32 tables on the model's device.
    """
    V, P = model.codebook_size, model.num_image_tokens
    device = model_device(model)
    ids = torch.arange(V, device=device)[None]  # (1, V)
    by_token = model.embed_tokens(ids, torch.zeros_like(ids))[0].float()  # (V, D) = T[v] + Q[0]
    positions = torch.arange(P, device=device)[None]  # (1, P)
    by_position = model.embed_tokens(torch.zeros_like(positions), positions)[
        0
    ].float()  # (P, D) = T[0] + Q[p]
    token_table, position_table = by_token, by_position - by_token[0]

    g = torch.Generator().manual_seed(0)
    probe_ids = torch.randint(0, V, (1, 32), generator=g).to(device)
    probe_pos = torch.randint(0, P, (1, 32), generator=g).to(device)
    direct = model.embed_tokens(probe_ids, probe_pos)[0].float()  # (32, D)
    composed = token_table[probe_ids[0]] + position_table[probe_pos[0]]
    tol = 1e-4 * (1.0 + direct.abs().max().item())
    if not torch.allclose(direct, composed, atol=tol, rtol=0.0):
        err = (direct - composed).abs().max().item()
        raise ValueError(
            f"base model {model.name!r}: embed_tokens(ids, positions) is not token + position "
            f"embedding (max deviation {err:.3g}); the shortcut needs an additive embedding"
        )
    return token_table, position_table


# ---------------------------------------------------------------------------- layers
class TimeEmbedder(nn.Module):
    """Mask ratio in [0, 1] -> (B, d): sinusoidal features of 1000 * t, then an MLP.

    DiT's ``TimestepEmbedder`` (facebookresearch/DiT ``models.py``) as used by the
    reference: cos/sin halves, max period 10000, hidden width round(sqrt(d * 256)).
    """

    def __init__(self, dim: int, frequencies: int = TIME_FREQUENCIES) -> None:
        super().__init__()
        hidden = round(math.sqrt(dim * frequencies))
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def sinusoid(self, t: Tensor) -> Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = t.float()[:, None] * freqs[None]  # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.frequencies % 2:
            emb = F.pad(emb, (0, 1))
        return emb  # (B, frequencies)

    def forward(self, mask_ratio: Tensor) -> Tensor:
        # sinusoids in float32, then the MLP in its own dtype (a bfloat16 network on a GPU)
        freqs = self.sinusoid(mask_ratio * TIME_SCALE).to(self.mlp[0].weight.dtype)
        return self.mlp(freqs)  # (B, d)


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value inputs (packed in-projection
    like ``nn.MultiheadAttention``), on ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"shortcut net: bottleneck width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape  # (B, n, d) -> (B, H, n, d / H)
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """x: (B, Q, d) queries; context: (B, K, d) keys/values; context_mask: (B, K) bool,
        True = attend (None = all). Returns (B, Q, d) before the residual add."""
        d = x.shape[-1]
        w, b = self.in_proj.weight, self.in_proj.bias
        q = self._split(F.linear(x, w[:d], b[:d]))
        k = self._split(F.linear(context, w[d : 2 * d], b[d : 2 * d]))
        v = self._split(F.linear(context, w[2 * d :], b[2 * d :]))
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, K)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        bsz, _, n, _ = o.shape
        return self.out_proj(o.transpose(1, 2).reshape(bsz, n, d))


def feed_forward(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))  # fmt: skip


class ShortcutBlock(nn.Module):
    """Pre-norm cross-attention to the new tokens + FF, then pre-norm self-attention + FF
    (reference ``ShortcutAttnBlock``). With ``cross=False`` the first attention is a
    self-attention over the features (the no-cross-attention ablation)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        dropout: float,
        cross: bool,
        normalized_self_kv: bool = False,
    ) -> None:
        super().__init__()
        self.cross = cross
        self.normalized_self_kv = normalized_self_kv
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.norm2, self.ff1 = nn.LayerNorm(dim), feed_forward(dim, mlp_hidden, dropout)
        self.norm3, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.norm4, self.ff2 = nn.LayerNorm(dim), feed_forward(dim, mlp_hidden, dropout)

    def forward(self, x: Tensor, tokens: Tensor | None, token_mask: Tensor | None) -> Tensor:
        # x: (B, L, d). PreNorm as in the reference: only the queries' input is normalised;
        # keys/values are the new tokens (cross) or the raw features (self).
        h = self.norm1(x)
        x = x + (self.attn1(h, tokens, token_mask) if self.cross else self.attn1(h, self._self_kv(x, h)))
        x = x + self.ff1(self.norm2(x))
        h = self.norm3(x)
        x = x + self.attn2(h, self._self_kv(x, h))
        return x + self.ff2(self.norm4(x))

    def _self_kv(self, x: Tensor, normed: Tensor) -> Tensor:
        """Keys/values of a self-attention: the raw features (reference) or, with the
        ``normalized_self_kv`` option, the normalised ones."""
        return normed if self.normalized_self_kv else x


# ---------------------------------------------------------------------------- network
class ShortcutNet(nn.Module):
    """S(f, new tokens, t) = f + delta: the next step's last-layer features.

    token_table (V, D) and position_table (P, D) are frozen copies of the base model's
    embeddings (non-persistent buffers: not trained, not saved; they come from the base
    model the weights are bound to, see ``accelerators.shortcut.weights``).
    """

    def __init__(
        self, config: ShortcutNetConfig, dim: int, token_table: Tensor, position_table: Tensor
    ) -> None:
        super().__init__()
        self.config = config
        self.dim = dim
        d = config.inner_dim(dim)
        if d < 1:
            raise ValueError(f"shortcut net: ratio {config.ratio} leaves no width of D={dim}")
        self.inner = d
        cross = not config.no_cross_attention
        bottleneck = config.ratio != 1
        self.proj_in = nn.Linear(dim, d) if bottleneck else nn.Identity()
        self.proj_out = nn.Linear(d, dim) if bottleneck else nn.Identity()
        self.token_proj = (nn.Linear(dim, d) if bottleneck else nn.Identity()) if cross else None
        mlp_hidden = max(1, round(d * config.mlp_ratio))
        self.blocks = nn.ModuleList(
            ShortcutBlock(d, config.heads, mlp_hidden, config.dropout, cross, config.normalized_self_kv)
            for _ in range(config.num_blocks)
        )
        self.final = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12)
        )
        if config.time_embedding:
            self.time_embed = TimeEmbedder(d)
            self.ada_ln = nn.Linear(d, 2 * d)  # -> scale, shift
        else:
            self.time_embed = self.ada_ln = None
        self.register_buffer("token_table", token_table.detach().clone().float(), persistent=False)
        self.register_buffer("position_table", position_table.detach().clone().float(), persistent=False)

    @classmethod
    def for_model(cls, model: BaseModel, config: ShortcutNetConfig | None = None) -> ShortcutNet:
        """A fresh (randomly initialised) network for ``model``, on the model's device."""
        token_table, position_table = embedding_tables(model)
        return cls(config or ShortcutNetConfig(), model.dim, token_table, position_table).to(
            token_table.device
        )

    def embed_new_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        """(B, K) image-token ids and image positions -> (B, K, D) base-model embeddings."""
        return self.token_table[ids] + self.position_table[positions]

    def forward(
        self,
        features: Tensor,
        new_ids: Tensor | None,
        new_positions: Tensor | None,
        mask_ratio: Tensor,
        new_valid: Tensor | None = None,
    ) -> Tensor:
        """features: (B, L, D) last-layer features of the previous step; new_ids,
        new_positions: (B, K) tokens revealed by that step (any order); mask_ratio: (B,)
        fraction of image tokens still masked after that reveal; new_valid: (B, K) bool,
        False marks padding (batches mixing steps with different K). Returns (B, L, D)."""
        x = self.proj_in(features)  # (B, L, d)
        tokens = None
        if self.token_proj is not None:
            if new_ids is None or new_positions is None:
                raise ValueError("the shortcut net needs the newly revealed tokens (ids and positions)")
            tokens = self.token_proj(self.embed_new_tokens(new_ids, new_positions).to(x.dtype))  # (B, K, d)
        for block in self.blocks:
            x = block(x, tokens, new_valid)
        x = self.final(x)
        if self.time_embed is not None:
            scale, shift = (
                self.ada_ln(self.time_embed(mask_ratio)).unsqueeze(1).chunk(2, dim=-1)
            )  # (B, 1, d) each
            x = x * (1 + scale) + shift
        return features + self.proj_out(x)


# ---------------------------------------------------------------------------- cost
@torch.no_grad()
def cost_per_call(
    model: BaseModel, net: ShortcutNet, rows: int = 1, new_tokens: int | None = None
) -> dict[str, int]:
    """FLOPs (torch's counter, attention included; 2 per multiply-add) of one shortcut call,
    of the logits head it feeds, and of one full base forward (with its head), for ``rows``
    batch rows and ``new_tokens`` revealed tokens (default: P / N at the model's default N).
    """
    from bench.flops import count_flops
    from bench.forward import full_forward, logits_of

    device = model_device(model)
    L, P, D = model.seq_len, model.num_image_tokens, model.dim
    k = new_tokens or max(1, round(P / model.default_sampling.steps))
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(rows, L, D, generator=g).to(device)
    ids = torch.randint(0, model.codebook_size, (rows, k), generator=g).to(device)
    pos = torch.stack([torch.randperm(P, generator=g)[:k] for _ in range(rows)]).to(device)
    t = torch.full((rows,), 0.5, device=device)
    tokens = model.initial_tokens(rows)
    cond = model.conditions(rows, torch.Generator().manual_seed(0))
    was_training = net.training
    net.eval()
    out = {
        "shortcut": count_flops(lambda: net(feats, ids, pos, t)),
        "head": count_flops(lambda: logits_of(model, feats)),
        "base_forward": count_flops(lambda: full_forward(model, tokens, cond)),
    }
    net.train(was_training)
    return out
