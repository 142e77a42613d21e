"""``fashion``: the embedded default, a MaskGIT v1 trained here on Fashion-MNIST and shipped.

Registered by ``base_models.fashion.hooks``, which names this module's config and factory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from base_models.maskgit.checkpoint import load_transformer_safetensors, load_vqgan_safetensors
from base_models.maskgit.model import MaskGITModel
from bench.protocol import SamplingSettings
from bench.sampling_options import apply_sampling_options

WEIGHTS = Path(__file__).parent / "weights"
# Sampling defaults of the embedded model (MaskGIT-pytorch semantics, N chosen for 64 tokens).
FASHION_SAMPLING = SamplingSettings(steps=16, cfg_weight=3.0, cfg_schedule="linear", mask_schedule="arccos",
                                    temperature=1.0, gumbel_temperature=4.5)  # fmt: skip


@dataclass(frozen=True)
class FashionConfig:
    """transformer / tokenizer: weights files (default: the shipped ones).
    Sampling (``bench.sampling_options``; unset = ``FASHION_SAMPLING``): steps (0 = keep),
    cfg_weight (negative = keep), cfg_schedule (linear | constant), mask_schedule (arccos |
    cosine | linear), temperature (> 0), gumbel_temperature (>= 0), reveal_policy
    (confidence | halton)."""

    transformer: str = ""
    tokenizer: str = ""
    steps: int = 0
    cfg_weight: float = -1.0
    cfg_schedule: str | None = None
    mask_schedule: str | None = None
    temperature: float | None = None
    gumbel_temperature: float | None = None
    reveal_policy: str | None = None


def load_fashion(cfg: FashionConfig | None = None, device: torch.device | str = "cpu") -> MaskGITModel:
    cfg = cfg or FashionConfig()
    sampling = apply_sampling_options(FASHION_SAMPLING, cfg, owner="fashion")  # fails before loading
    transformer = load_transformer_safetensors(cfg.transformer or WEIGHTS / "maskgit.safetensors")
    vqgan = load_vqgan_safetensors(cfg.tokenizer or WEIGHTS / "tokenizer.safetensors")
    model = MaskGITModel(
        transformer, vqgan, name="fashion", default_sampling=sampling, dataset="fashion-mnist"
    )
    return model.to(device)
