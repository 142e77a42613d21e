"""Neutral layers shared by base models and accelerators (bench/ imports no plugin, and
accelerators import no base model, so layers both need live here).

LLaDA's RMSNorm and rotary embeddings, as Alpha-VLLM/Lumina-DiMOO ``model/modeling_llada.py``
(``RMSLayerNorm``, ``RotaryEmbedding``) builds them, with one change: the rotary angles are
taken at *given* absolute positions instead of 0..L-1, so a subset of rows (a partial step, or
the keys of a cross-attention) gets exactly the angles its place in the sequence gives it.
Used by ``base_models.dimoo.llada`` (the base transformer) and
``accelerators.shortcut.dimoo_model`` (DiMOO-Shortcut).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """LLaDA ``RMSLayerNorm``: float32 normalisation, cast back, then ``weight * x``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rotary_angles(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """sin, cos of the rotary angles at ``positions`` (B, Q) long -> each (B, 1, Q, Dh) float32.

    Element (i, j) is position_i * inv_freq_j, the same single float32 product the reference's
    table ``einsum("i,j->ij", arange(L), inv_freq)`` holds at row position_i.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, Q, Dh/2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, Q, Dh)
    return angles.sin(), angles.cos()


def rotate_half(x: Tensor) -> Tensor:
    """(..., Dh) -> (-x2, x1) with x1, x2 the two halves of the head dim (reference layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, sin: Tensor, cos: Tensor, full_precision: bool = True) -> Tensor:
    """x (B, H, Q, Dh) rotated by angles (B, 1, Q, Dh); float32 math when ``full_precision``."""
    xr = x.float() if full_precision else x
    sin, cos = sin.type_as(xr), cos.type_as(xr)
    return (xr * cos + rotate_half(xr) * sin).to(x.dtype)
