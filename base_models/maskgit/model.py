"""``MaskGITModel``: a MaskTransformer + VQGAN pair implementing ``bench.protocol.BaseModel``."""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from base_models.maskgit.transformer import MaskTransformer
from base_models.maskgit.vqgan import VQModel
from bench.protocol import SamplingSettings


class MaskGITModel:
    """Class-conditional MaskGIT exposed through the block protocol.

    Sequence layout: L = P + 1 positions, image tokens first, the class token last.
    Conditions are class labels (n,); the null condition is -1 (dropped-class token).
    """

    def __init__(
        self,
        transformer: MaskTransformer,
        vqgan: VQModel | None,
        name: str = "maskgit",
        default_sampling: SamplingSettings | None = None,
        dataset: str | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.vqgan = vqgan.eval() if vqgan is not None else None
        cfg = transformer.cfg
        self.name = name
        self.dataset = dataset  # BaseModel.dataset: what it was trained on (None: not told)
        self.num_image_tokens = cfg.num_image_tokens
        self.seq_len = cfg.num_image_tokens + 1
        self.codebook_size = cfg.codebook_size
        self.mask_id = cfg.codebook_size
        self.nclass = cfg.nclass
        self.dim = cfg.hidden_dim
        self.blocks = transformer.blocks
        self.default_sampling = default_sampling or SamplingSettings()
        self._fingerprint: str | None = None

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_emb.device

    def to(self, device: torch.device | str) -> MaskGITModel:
        self.transformer.to(device)
        if self.vqgan is not None:
            self.vqgan.to(device)
        return self

    # ---- conditions
    def conditions(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.nclass, (n,), generator=generator).to(self.device)

    def null_conditions(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def initial_tokens(self, n: int) -> Tensor:
        return torch.full((n, self.num_image_tokens), self.mask_id, dtype=torch.long, device=self.device)

    # ---- block protocol
    def embed(self, tokens: Tensor, cond: Tensor, positions: Tensor | None = None) -> Tensor:
        return self.transformer.embed(tokens, cond, positions)

    def embed_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.transformer.embed_tokens(ids, positions)

    def final_features(self, h: Tensor) -> Tensor:
        return self.transformer.last_layer(h)

    def head(self, features: Tensor, positions: Tensor | None = None) -> Tensor:
        return self.transformer.head(features, positions)

    # ---- pixels
    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        if self.vqgan is None:
            raise RuntimeError(f"{self.name}: no tokenizer loaded, cannot decode tokens to images")
        g = math.isqrt(self.num_image_tokens)
        x = self.vqgan.decode_code(tokens.clamp(0, self.codebook_size - 1).view(-1, g, g))
        return (x.clamp(-1, 1) + 1) / 2

    def fingerprint(self) -> str:
        """sha256 over the transformer's (and tokenizer's) tensors, first 16 hex digits."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            modules = [self.transformer] + ([self.vqgan] if self.vqgan is not None else [])
            for m in modules:
                for k, v in sorted(m.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
