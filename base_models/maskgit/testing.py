"""A tiny random MaskGIT for tests: real architecture, seconds on a CPU."""

from __future__ import annotations

import dataclasses

import torch

from base_models.maskgit.model import MaskGITModel
from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
from base_models.maskgit.vqgan import VQGANConfig, VQModel
from bench.protocol import SamplingSettings

TINY_TRANSFORMER = TransformerConfig(grid=4, codebook_size=16, nclass=10, hidden_dim=32, depth=2, heads=2,
                                     mlp_dim=64, dropout=0.0)  # fmt: skip
TINY_VQGAN = VQGANConfig(resolution=16, in_channels=1, out_ch=1, ch=8, ch_mult=(1, 1, 2), num_res_blocks=1,
                         attn_resolutions=(), z_channels=8, n_embed=16, embed_dim=4, norm_groups=4)  # fmt: skip
TINY_SAMPLING = SamplingSettings(steps=6, cfg_weight=2.0)


def tiny_maskgit(seed: int = 0, with_vqgan: bool = True, **overrides) -> MaskGITModel:
    """Random weights drawn from ``seed``; ``overrides`` change TransformerConfig fields.

    The bias and embeddings are randomised more strongly than at init so that logits
    differ across positions (a zero bias makes many ties)."""
    cfg = dataclasses.replace(TINY_TRANSFORMER, **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = MaskTransformer(cfg)
        with torch.no_grad():
            transformer.bias.normal_(0.0, 1.0)
            transformer.tok_emb.weight.normal_(0.0, 1.0)
        vqgan = VQModel(dataclasses.replace(TINY_VQGAN, n_embed=cfg.codebook_size)) if with_vqgan else None
    return MaskGITModel(transformer, vqgan, name="maskgit-tiny", default_sampling=TINY_SAMPLING)
