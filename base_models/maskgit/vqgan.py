"""The taming-transformers VQGAN (Encoder, Decoder, codebook) used as MaskGIT's tokenizer.

Architecture and parameter names follow taming-transformers
(CompVis/taming-transformers, ``taming/modules/diffusionmodules/model.py`` Encoder /
Decoder / ResnetBlock / AttnBlock, ``taming/modules/vqvae/quantize.py``
VectorQuantizer, ``taming/models/vqgan.py`` VQModel) as vendored by MaskGIT-pytorch
(llvictorll/Maskgit-pytorch, ``Network/Taming``), so the public ``last.ckpt`` loads
with strict key matching. Written from scratch here; no upstream code is copied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class VQGANConfig:
    """Shape of the tokenizer (taming ``ddconfig`` + codebook).

    resolution/in_channels/out_ch: image size and channels. ch, ch_mult: width per
    level; len(ch_mult)-1 downsamplings give the factor f = 2**(len-1).
    num_res_blocks: residual blocks per level (the decoder uses one more).
    attn_resolutions: feature-map sizes that get self-attention (the middle always does).
    z_channels: latent channels; n_embed, embed_dim: codebook size and code width.
    norm_groups: GroupNorm groups (taming hard-codes 32).
    """

    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    n_embed: int = 1024
    embed_dim: int = 256
    norm_groups: int = 32
    dropout: float = 0.0
    beta: float = 0.25  # commitment weight of the VQ loss

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VQGANConfig:
        d = dict(d)
        for key in ("ch_mult", "attn_resolutions"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice, with a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv q, k, v and proj_out."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (b, hw, c)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hgt, wid))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after asymmetric (0, 1, 0, 1) padding, as taming does."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` and ``attn`` lists (+ down/upsample), taming's names."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class Middle(nn.Module):
    def __init__(self, ch: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups, dropout)
        self.attn_1 = AttnBlock(ch, groups)
        self.block_2 = ResnetBlock(ch, ch, groups, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (b, in_channels, R, R) -> latent (b, z_channels, R/f, R/f)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        in_mult = (1,) + tuple(cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for lvl, mult in enumerate(cfg.ch_mult):
            level = Level()
            block_in = cfg.ch * in_mult[lvl]
            block_out = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, g, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, g))
            if lvl != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = Middle(block_in, g, cfg.dropout)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)  # double_z=False

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (b, z_channels, r, r) -> image (b, out_ch, r*f, r*f) (unbounded; ~[-1, 1])."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        n = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1)
        self.mid = Middle(block_in, g, cfg.dropout)
        levels: list[Level] = []
        for lvl in reversed(range(n)):
            level = Level()
            block_out = cfg.ch * cfg.ch_mult[lvl]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, g, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in, g))
            if lvl != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with a straight-through gradient (taming ``VectorQuantizer``)."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: Tensor) -> Tensor:
        """z: (b, e, h, w) -> code indices (b, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (b*h*w, e)
        w = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * flat @ w.t()
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, idx: Tensor) -> Tensor:
        """idx (b, h, w) -> quantised latent (b, e, h, w)."""
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        idx = self.codes(z)
        zq = self.lookup(idx)
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(z, zq.detach())
        zq = z + (zq - z).detach()  # straight-through
        return zq, loss, idx


class VQModel(nn.Module):
    """Encoder + quant_conv + quantize + post_quant_conv + Decoder (taming ``VQModel``)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode_latent(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] (b, c, R, R) -> pre-quantisation latent (b, e, R/f, R/f)."""
        return self.quant_conv(self.encoder(x))

    def encode(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> code indices (b, R/f, R/f)."""
        return self.quantize.codes(self.encode_latent(x))

    def decode_code(self, idx: Tensor) -> Tensor:
        """Code indices (b, h, w) -> images, roughly in [-1, 1]."""
        return self.decoder(self.post_quant_conv(self.quantize.lookup(idx)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        zq, vq_loss, idx = self.quantize(self.encode_latent(x))
        return self.decoder(self.post_quant_conv(zq)), vq_loss, idx
