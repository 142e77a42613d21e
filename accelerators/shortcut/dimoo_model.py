"""DiMOO-Shortcut: the MIGM-Shortcut network for Lumina-DiMOO (text-to-image, LLaDA blocks).

Reference: Zhu et al., "Accelerating Masked Image Generation by Learning Latent Controlled
Dynamics" (arXiv 2602.23996), and Kaiwen-Zhu/MIGM-Shortcut,
``DiMOO-Shortcut/model/shortcut_model.py`` (``MDMShortcut``, ``ShortcutAttnBlock``,
``ShortcutCrossAttention``, ``RotaryEmbedding4CrossAttn``, ``TimestepEmbedder``), driven by
``DiMOO-Shortcut/generators/image_generation_generator.py`` (``generate_image_shortcut``) and
``DiMOO-Shortcut/utils/shortcut.py`` (training pairs). What carries over:

* the base model's LLaDA config copied with only ``d_model`` changed to d = round(D / ratio)
  (``bottleneck_ratio``, 2 in ``infer.py``/``train_shortcut.py``): heads, kv heads, the MLP
  width F, rope_theta and the RMSNorm eps stay the base model's, so the head dim halves and the
  MLP keeps F (12288 for the 8B model);
* ``proj_in`` (D -> d) on the features, ``new_token_proj_in`` (D -> d) on the key tokens'
  embeddings, ``proj_out`` (d -> D), all with bias; no projections when d = D;
* ``n_block`` (1) pairs of a cross-attention block then a self-attention block, both LLaDA
  "llama" blocks (RMSNorm, rotary, GQA, SwiGLU, no biases). In the cross block the *same*
  ``attn_norm`` normalises the features (queries) and the key tokens (keys/values);
* the keys/values of the cross-attention: the base model's input embeddings (``wte``) of the
  tokens revealed by the previous step together with the prompt tokens (the generator sets
  every prompt position of the conditional stream to "new"; the unconditional stream's prompt
  is not among the keys);
* rotary on queries at their sequence positions and on keys at the absolute positions of the
  key tokens (``RotaryEmbedding4CrossAttn`` takes the key angles at ``new_token_map``'s
  indices), so only relative offsets matter: shifting every position by a constant changes
  nothing (up to float rounding);
* after the blocks ``ln_f`` (RMSNorm), then adaLN ``x * (1 + scale) + shift`` with scale and
  shift from DiT's timestep embedding of 1000 * mask ratio (``TimestepEmbedder``, shared with
  the MaskGIT network), then ``proj_out`` and the residual: output = input features + delta;
* logits of a shortcut step: the predicted features times the rows of the base model's output
  head that belong to the image codes (the last ``codebook_size`` rows), see
  ``image_code_logits``.

The features are the base model's last-layer features (after its ``ln_f``) of the *whole*
stream (prompt, BOA, BOI, image rows with their newline tokens, EOI, EOA), as the reference
feeds them; the self-attention runs over all of them.

Differences from the reference, on purpose: it runs one stream at a time and never masks
padding; here batches of streams of different lengths carry ``valid`` masks (features) and
``key_valid`` masks (key tokens) that are really applied, a row with no valid key gets a zero
cross-attention branch instead of NaNs, positions are explicit instead of 0..T-1, and
parameters keep torch's default initialisation (the reference's ``reset_parameters`` uses
LLaDA's init scheme; training from scratch is not this module's concern). Dropout is omitted
(the reference trains with 0). Parameter names equal the reference's, so its state dict maps
one to one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from accelerators.shortcut.model import TimeEmbedder
from bench.flops import count_flops
from bench.nn import RMSNorm, apply_rotary, rotary_angles


@dataclass(frozen=True)
class DiMOOShortcutConfig:
    """Shape of DiMOO-Shortcut. Defaults: Lumina-DiMOO 8B (LLaDA-8B's transformer, GSAI-ML/LLaDA-8B
    ``config.json``) with the reference's shortcut options (``infer.py`` / ``train_shortcut.py``).

    base_dim: D, width of the base model's features and token embeddings (``d_model``).
    n_heads: attention heads, the base model's; the head dim is inner_dim / n_heads.
    n_kv_heads: key/value heads (GQA when fewer than n_heads), the base model's.
    mlp_hidden_size: SwiGLU width F, the base model's (the reference does not shrink it).
    rope_theta: rotary base, the base model's.
    rms_norm_eps: epsilon of every RMSNorm, the base model's.
    rope_full_precision: rotary math in float32 (LLaDA's default).
    bottleneck_ratio: d = round(D / ratio); 1 = no projections. Reference: 2.
    n_block: (cross-attention block, self-attention block) pairs. Reference: 1.
    embed_t: adaLN on the mask ratio (off = the reference's ``--no_embed_t`` ablation).
    cross_attention: attend to the key tokens (off = the reference's ``--no_ca`` ablation: the
        cross block becomes a second self-attention block and the tokens are ignored).
    """

    base_dim: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    mlp_hidden_size: int = 12288
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    rope_full_precision: bool = True
    bottleneck_ratio: float = 2.0
    n_block: int = 1
    embed_t: bool = True
    cross_attention: bool = True

    def __post_init__(self) -> None:
        d = self.inner_dim
        if not self.bottleneck_ratio > 0 or d < 1:
            raise ValueError(f"dimoo shortcut: bottleneck_ratio {self.bottleneck_ratio} leaves no width")
        if self.n_block < 1 or self.mlp_hidden_size < 1:
            raise ValueError(f"dimoo shortcut: need n_block, mlp_hidden_size >= 1, got {self.n_block}, "
                             f"{self.mlp_hidden_size}")  # fmt: skip
        if d % self.n_heads or (d // self.n_heads) % 2:
            raise ValueError(f"dimoo shortcut: width {d} must split into {self.n_heads} heads of even size")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"dimoo shortcut: n_heads={self.n_heads} is not a multiple of "
                             f"n_kv_heads={self.n_kv_heads}")  # fmt: skip

    @property
    def inner_dim(self) -> int:
        """d = round(D / bottleneck_ratio), the reference's rounding."""
        return round(self.base_dim / self.bottleneck_ratio)

    @property
    def head_dim(self) -> int:
        return self.inner_dim // self.n_heads

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DiMOOShortcutConfig:
        data = json.loads(text)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown dimoo shortcut options {unknown}")
        return cls(**data)


# ---------------------------------------------------------------------------- layers
class KeyTokens(NamedTuple):
    """The keys/values of a cross-attention: tokens (B, K, d) at absolute ``positions`` (B, K)
    long; ``valid`` (B, K) bool, False = padding (None = all real)."""

    tokens: Tensor
    positions: Tensor
    valid: Tensor | None = None


class ShortcutLLaDABlock(nn.Module):
    """A LLaDA "llama" block at width d whose keys/values may come from another sequence.

    Self-attention (``keys=None``): LLaDALlamaBlock. Cross-attention: the reference's
    ``ShortcutCrossAttention``, queries from ``attn_norm(x)``, keys/values from
    ``attn_norm(keys.tokens)`` with the same norm. Parameter names as LLaDA's.
    """

    def __init__(self, cfg: DiMOOShortcutConfig) -> None:
        super().__init__()
        d, kv, hidden = cfg.inner_dim, cfg.n_kv_heads * cfg.head_dim, cfg.mlp_hidden_size
        self.cfg = cfg
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, hidden, bias=False)  # gate
        self.up_proj = nn.Linear(d, hidden, bias=False)  # up
        self.ff_out = nn.Linear(hidden, d, bias=False)  # down

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        b, n, _ = x.shape  # (B, n, heads * Dh) -> (B, heads, n, Dh)
        return x.view(b, n, heads, self.cfg.head_dim).transpose(1, 2)

    def _rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        sin, cos = rotary_angles(positions, self.cfg.head_dim, self.cfg.rope_theta)  # (B, 1, n, Dh)
        return apply_rotary(x, sin, cos, self.cfg.rope_full_precision)

    def attention(
        self, x: Tensor, positions: Tensor, valid: Tensor | None = None, keys: KeyTokens | None = None
    ) -> Tensor:
        """The attention branch before the residual add. x (B, Q, d) at ``positions`` (B, Q).
        Keys/values from ``keys`` (cross-attention), or from x itself when ``keys`` is None
        (self-attention, ``valid`` (B, Q) bool marking x's real rows). A row without any real
        key gets a zero branch. -> (B, Q, d)."""
        h = self.attn_norm(x)
        if keys is None:
            s, s_pos, key_valid = h, positions, valid
        else:
            s, s_pos, key_valid = self.attn_norm(keys.tokens), keys.positions, keys.valid
        q = self._rotate(self._heads(self.q_proj(h), self.cfg.n_heads), positions)  # (B, H, Q, Dh)
        k = self._rotate(self._heads(self.k_proj(s), self.cfg.n_kv_heads), s_pos)  # (B, Hkv, K, Dh)
        v = self._heads(self.v_proj(s), self.cfg.n_kv_heads)
        groups = self.cfg.n_heads // self.cfg.n_kv_heads
        if groups > 1:  # GQA: each k/v head serves ``groups`` consecutive query heads (reference layout)
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask, has_key = None, None
        if key_valid is not None:
            has_key = key_valid.any(dim=1)  # (B,)
            # a row with no real key attends to its padding (finite) and is zeroed below (no NaN)
            mask = (key_valid | ~has_key[:, None])[:, None, None, :]  # (B, 1, 1, K)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Q, Dh)
        if has_key is not None:
            o = o * has_key[:, None, None, None].to(o.dtype)
        b, _, n, _ = o.shape
        return self.attn_out(o.transpose(1, 2).reshape(b, n, -1))

    def mlp(self, x: Tensor) -> Tensor:
        """SwiGLU branch ff_out(silu(ff_proj(h)) * up_proj(h)), h = ff_norm(x): (B, Q, d)."""
        h = self.ff_norm(x)
        return self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))

    def forward(
        self, x: Tensor, positions: Tensor, valid: Tensor | None = None, keys: KeyTokens | None = None
    ) -> Tensor:
        x = x + self.attention(x, positions, valid, keys)
        return x + self.mlp(x)


class ShortcutAttnBlock(nn.Module):
    """Reference ``ShortcutAttnBlock``: ``cross_attn`` (to the key tokens, or a self-attention
    in the no-cross-attention ablation) then ``self_attn`` over the features."""

    def __init__(self, cfg: DiMOOShortcutConfig) -> None:
        super().__init__()
        self.cross = cfg.cross_attention
        self.cross_attn = ShortcutLLaDABlock(cfg)
        self.self_attn = ShortcutLLaDABlock(cfg)

    def forward(self, x: Tensor, positions: Tensor, valid: Tensor | None, keys: KeyTokens | None) -> Tensor:
        x = self.cross_attn(x, positions, valid, keys if self.cross else None)
        return self.self_attn(x, positions, valid)


# ---------------------------------------------------------------------------- network
class DiMOOShortcutNet(nn.Module):
    """S(f, key tokens, t) = f + delta: a stream's next last-layer features (reference ``MDMShortcut``).

    Shapes: B streams, L rows each (padded to the longest), K key tokens each (padded), D = base
    width, d = inner width. Positions are absolute sequence positions (long).
    """

    def __init__(self, config: DiMOOShortcutConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DiMOOShortcutConfig()
        big, d = cfg.base_dim, cfg.inner_dim
        bottleneck = cfg.bottleneck_ratio != 1
        self.proj_in = nn.Linear(big, d) if bottleneck else nn.Identity()
        self.proj_out = nn.Linear(d, big) if bottleneck else nn.Identity()
        self.new_token_proj_in = nn.Linear(big, d) if bottleneck and cfg.cross_attention else nn.Identity()
        self.blocks = nn.ModuleList(ShortcutAttnBlock(cfg) for _ in range(cfg.n_block))
        self.ln_f = RMSNorm(d, cfg.rms_norm_eps)
        if cfg.embed_t:
            self.time_embedder = TimeEmbedder(d)
            self.adaLN_modulation = nn.Linear(d, 2 * d)  # -> scale, shift
        else:
            self.time_embedder = self.adaLN_modulation = None

    def forward(
        self,
        features: Tensor,
        positions: Tensor,
        mask_ratio: Tensor,
        keys: Tensor | None = None,
        key_positions: Tensor | None = None,
        key_valid: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Predict the features after the next step.

        features: (B, L, D) the base model's last-layer features (after ``ln_f``) of the previous
            step, every row of the stream (prompt, specials, image tokens, newlines).
        positions: (B, L) long, the absolute sequence positions of those rows.
        mask_ratio: (B,) in [0, 1], the fraction of image tokens still masked after the previous
            step's reveal (the reference: unknown count / initial masked count).
        keys: (B, K, D) the base model's input embeddings of the key tokens: the tokens revealed by
            the previous step and, in the conditional stream, the prompt tokens (see
            ``cross_attention_inputs``). Required unless ``cross_attention`` is off.
        key_positions: (B, K) long, the absolute positions of the key tokens.
        key_valid: (B, K) bool, False = padding key (None = all real).
        valid: (B, L) bool, False = padding row; padding rows are never attended to and their
            outputs are meaningless (None = all real).
        Returns (B, L, D).
        """
        x = self.proj_in(features)  # (B, L, d)
        tokens = None
        if self.config.cross_attention:
            if keys is None or key_positions is None:
                raise ValueError("DiMOO shortcut: cross-attention needs the key tokens and their positions")
            tokens = KeyTokens(
                self.new_token_proj_in(keys.to(x.dtype)), key_positions, key_valid
            )  # (B, K, d)
        for block in self.blocks:
            x = block(x, positions, valid, tokens)
        x = self.ln_f(x)
        if self.time_embedder is not None:
            emb = self.time_embedder(mask_ratio.to(x.device))  # (B, d)
            scale, shift = self.adaLN_modulation(emb).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, d) each
            x = x * (1 + scale) + shift
        return features + self.proj_out(x)


# ---------------------------------------------------------------------------- inputs / outputs
def cross_attention_inputs(
    ids: Tensor, positions: Tensor, is_key: Tensor, embed
) -> tuple[Tensor, Tensor, Tensor]:
    """Pack each stream's key tokens for ``DiMOOShortcutNet``.

    ids, positions: (B, L) token ids and absolute positions of the streams; is_key: (B, L) bool,
    True at the key tokens. The reference's rule (``generate_image_shortcut``): is_key =
    (ids != ids before the step) | prompt positions in the conditional stream, only the revealed
    tokens in the unconditional one. embed: the base model's input embedding, (B, K) ids ->
    (B, K, D). Returns keys (B, K, D), key_positions (B, K), key_valid (B, K) with K the largest
    count (at least 1); each row's keys are left-aligned in sequence order, padding after them.
    """
    counts = is_key.sum(dim=1)  # (B,)
    k = max(int(counts.max()), 1)
    # stable sort on "not a key": the key indices first, in sequence order
    order = torch.sort((~is_key).to(torch.uint8), dim=1, stable=True).indices[:, :k]  # (B, K)
    key_valid = torch.arange(k, device=ids.device)[None] < counts[:, None]
    key_ids = torch.gather(ids, 1, order)
    return embed(key_ids), torch.gather(positions, 1, order), key_valid


def image_code_logits(features: Tensor, head_weight: Tensor, codebook_size: int) -> Tensor:
    """Logits over the image codes: features (..., D) @ the last ``codebook_size`` rows of the base
    model's output head (table_size, D), whose image-code offset is the head width minus the
    codebook size (reference: ``head_weight = ff_out.weight[vocab_offset : vocab_offset +
    codebook_size]``). -> (..., codebook_size). The head is passed in, never copied."""
    if head_weight.shape[0] < codebook_size:
        raise ValueError(f"output head has {head_weight.shape[0]} rows < codebook size {codebook_size}")
    return F.linear(features, head_weight[head_weight.shape[0] - codebook_size :])


# ---------------------------------------------------------------------------- cost
@torch.no_grad()
def call_flops(config: DiMOOShortcutConfig, seq_len: int, num_keys: int, streams: int = 1) -> int:
    """FLOPs (``bench.flops`` convention: 2 per multiply-add, attention included) of one network
    call on ``streams`` streams of ``seq_len`` rows with ``num_keys`` key tokens each, counted on
    the meta device: no weights are allocated, so the 8B model's real shapes cost nothing."""
    meta = torch.device("meta")
    with meta:
        net = DiMOOShortcutNet(config).eval()
        feats = torch.empty(streams, seq_len, config.base_dim)
        pos = torch.empty(streams, seq_len, dtype=torch.long)
        keys = torch.empty(streams, num_keys, config.base_dim)
        key_pos = torch.empty(streams, num_keys, dtype=torch.long)
        t = torch.empty(streams)
    return count_flops(lambda: net(feats, pos, t, keys, key_pos))
